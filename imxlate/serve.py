"""A local web page to try a model: pick an image, a target domain (and, for stochastic families, a number
of samples), see input and outputs side by side, download the outputs.

Python's own http.server, one request at a time: the page is one person trying a model on their machine,
so a web framework would be a dependency for nothing, and serial requests keep the model (which is not
made for concurrent calls) safe. Nothing is written to disk: uploads are decoded and translated in memory
and answered as PNG bytes. It binds 127.0.0.1 unless told otherwise and refuses uploads over a size limit.

    GET  /                                  the page
    POST /translate?to=DOMAIN[&seed=N]      body: the image file's bytes -> the translation as image/png
"""
from __future__ import annotations

import html
import http.server
import io
import json
import signal
import threading
import socketserver
import time
import warnings
from urllib.parse import parse_qs, urlsplit

import torch
from PIL import Image, ImageOps

from .data import MAX_PIXELS, too_large
from .errors import ImxlateError

MAX_UPLOAD_MB = 20.0
MAX_SAMPLES = 8


def is_stochastic(tr, to: str) -> bool:
    """Whether translations into `to` vary with the seed (two seeds, one small fixed input)."""
    side = -(-64 // tr.family.size_multiple) * tr.family.size_multiple
    x = torch.linspace(-1, 1, 3 * side * side).reshape(3, side, side)
    return not torch.equal(tr.translate(x, to, seed=0), tr.translate(x, to, seed=1))


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Uploaded bytes -> an RGB or RGBA image (EXIF orientation applied), refused from its header when larger
    than `max_pixels`; an ImxlateError when it is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            img = Image.open(io.BytesIO(data))
        refused = too_large(*img.size, max_pixels)
        if refused:
            raise ImxlateError(refused.split(";")[0])
        img = ImageOps.exif_transpose(img)
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImxlateError(f"not an image this page can read ({e})") from None
    return img.convert("RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info else "RGB")


def page(tr, stochastic: dict[str, bool], max_upload: int) -> str:
    """The one HTML page: a form, and a script that posts the image once per sample and shows the results.
    Its empty icon keeps browsers from asking for a /favicon.ico the server does not have."""
    e = html.escape
    options = "".join(f"<option>{e(d)}</option>" for d in stochastic)
    return f"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>imxlate: {e(tr.path.name)}</title>
<link rel=icon href="data:,">
<style>body{{font-family:system-ui,sans-serif;background:#fff;color:#222;margin:2em auto;max-width:1100px;padding:0 1em}}
form{{display:flex;gap:1em;align-items:center;flex-wrap:wrap;margin:1em 0}}#out{{display:flex;gap:1em;flex-wrap:wrap}}
figure{{margin:0}}img{{max-width:520px;max-height:520px;border:1px solid #ddd}}
/* a small image (a 64 px glyph) is shown at least 256 px wide, its pixels kept sharp */
#out img{{min-width:256px;object-fit:contain;image-rendering:pixelated}}#msg{{color:#b00}}.note{{color:#666}}</style>
</head><body><h1>Try {e(tr.path.name)}</h1>
<p class=note>{e(tr.meta.get("family", ""))} model: {e(", ".join(tr.domains))}. Images up to {max_upload / 1e6:g} MB;
nothing leaves this machine or is written to disk.</p>
<form id=f><input type=file id=file accept="image/*" required>
<label>to <select id=to>{options}</select></label>
<label id=nl>samples <input type=number id=n min=1 max={MAX_SAMPLES} value=1 style="width:4em"></label>
<button>Translate</button></form><p id=msg></p><div id=out></div>
<script>
const stochastic = {json.dumps(stochastic)}, maxUpload = {max_upload};
const to = document.getElementById('to'), nl = document.getElementById('nl'), msg = document.getElementById('msg');
function showN() {{ nl.style.display = stochastic[to.value] ? '' : 'none'; }}
to.onchange = showN; showN();
function fig(url, caption, name) {{
  const f = document.createElement('figure'), img = new Image(); img.src = url; f.append(img);
  const c = document.createElement('figcaption'); c.textContent = caption + ' ';
  if (name) {{ const a = document.createElement('a'); a.href = url; a.download = name; a.textContent = 'download'; c.append(a); }}
  f.append(c); return f;
}}
document.getElementById('f').onsubmit = async (ev) => {{
  ev.preventDefault(); msg.textContent = '';
  const file = document.getElementById('file').files[0], out = document.getElementById('out');
  if (!file) return;
  if (file.size > maxUpload) {{ msg.textContent = `${{file.name}} is ${{(file.size / 1e6).toFixed(1)}} MB; the limit is ${{maxUpload / 1e6}} MB`; return; }}
  out.replaceChildren(fig(URL.createObjectURL(file), 'input: ' + file.name));
  const n = stochastic[to.value] ? Math.max(1, Math.min({MAX_SAMPLES}, +document.getElementById('n').value || 1)) : 1;
  const base = Math.floor(Math.random() * 1e9), stem = file.name.replace(/\\.[^.]*$/, '');
  for (let i = 0; i < n; i++) {{
    const r = await fetch(`translate?to=${{encodeURIComponent(to.value)}}&seed=${{base + i}}`, {{method: 'POST', body: file}});
    if (!r.ok) {{ msg.textContent = await r.text(); return; }}
    const name = `${{stem}}-to-${{to.value}}${{n > 1 ? '_' + i : ''}}.png`;
    out.append(fig(URL.createObjectURL(await r.blob()), to.value + (n > 1 ? ' #' + (i + 1) : ''), name));
  }}
}};
</script></body></html>
"""


def targets(tr) -> list[str]:
    """The domains the model translates into (a one-way model has one)."""
    directions = [d.split("->")[-1] for d in tr.meta.get("directions") or [] if isinstance(d, str)]
    return [d for d in tr.domains if d in directions] or list(tr.domains)


class Handler(http.server.BaseHTTPRequestHandler):
    server: "Server"
    timeout = 60  # seconds a stalled client may hold the (one-request-at-a-time) server

    def log_message(self, format, *args):  # quiet: the console shows only the URL and errors
        pass

    def answer(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, status: int, message: str) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        self.answer(status, message.encode(), "text/plain; charset=utf-8")

    def discard(self, length: int, seconds: float = 10.0, chunk: int = 1 << 20) -> None:
        """Read and drop (for at most `seconds`) a refused body after the answer: closing a connection with
        unread data resets it, and the client could lose the answer."""
        self.wfile.flush()
        deadline = time.monotonic() + seconds
        try:
            while length > 0 and time.monotonic() < deadline:
                got = self.rfile.read1(min(chunk, length))
                if not got:
                    break
                length -= len(got)
        except OSError:
            pass

    def do_GET(self):
        if urlsplit(self.path).path != "/":
            return self.refuse(404, "not found: the page is at /")
        self.answer(200, self.server.page.encode(), "text/html; charset=utf-8")

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/translate":
            return self.refuse(404, "not found: POST images to /translate?to=DOMAIN")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.refuse(411, "send the image with a Content-Length")
        limit = self.server.max_upload
        if length > limit:
            self.refuse(413, f"the upload is {length / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB "
                             "(imxlate serve --max-upload-mb)")
            return self.discard(length)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            to = query.get("to", "")
            self.server.translator.check_domain(to)
            seed = int(query["seed"]) % 2**63 if query.get("seed") else None
            img = decode(self.rfile.read(length))
            out = self.server.translator.translate(img, to, seed=seed)
        except ImxlateError as e:
            return self.refuse(400, str(e))
        except ValueError:
            return self.refuse(400, "seed must be a whole number")
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        self.answer(200, buf.getvalue(), "image/png")


class Server(http.server.HTTPServer):
    """The page's server for a loaded Translator; `serve_forever()` runs it, `shutdown()` stops it."""

    def __init__(self, translator, host: str = "127.0.0.1", port: int = 0, max_upload_mb: float = MAX_UPLOAD_MB):
        if not 0 <= port <= 65535:
            raise ImxlateError(f"--port {port}: give a port from 0 to 65535 (0 picks a free one)")
        if not max_upload_mb > 0:
            raise ImxlateError(f"--max-upload-mb must be more than 0, not {max_upload_mb}")
        self.translator, self.max_upload = translator, int(max_upload_mb * 1e6)
        self.page = page(translator, {d: is_stochastic(translator, d) for d in targets(translator)}, self.max_upload)
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise ImxlateError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                               "choose another --port (0 picks a free one)") from None

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # without http.server's name look-up (no network needed)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def serve(translator, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = MAX_UPLOAD_MB,
          say=print) -> None:
    """Serve the page until Ctrl-C, then close the socket and return."""
    server = Server(translator, host, port, max_upload_mb)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops it even when started from a shell that set SIGINT to ignored (background jobs)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    say(f"Serving {translator.path} at {server.url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    say("Stopped.")
