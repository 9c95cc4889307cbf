"""A local web page to try a model: pick an image, a target domain (and, for stochastic families, a number
of samples), see input and outputs side by side, download the outputs.

Python's own ThreadingHTTPServer: the page is one person (or a few) trying a model, so a web framework would
be a dependency for nothing. Each connection is served in a thread, at most `threads` at once (later ones
wait for a free thread), so a slow or idle client holds up no one else; the model's forward runs one at a
time under a lock, as the model is not made for concurrent calls. A client that sends nothing for
`read_timeout` seconds is dropped. An upload must declare its size (Content-Length; chunked uploads are
refused) and is refused before any of it is read when larger than the limit. Every refusal is an HTTP
status with a one-line plain-text message. Nothing is written to disk: uploads are decoded and translated
in memory and answered as PNG bytes. It binds 127.0.0.1 unless told otherwise.

    GET  /                                  the page
    POST /translate?to=DOMAIN[&seed=N]      body: the image file's bytes, or a multipart/form-data form
                                            with the image as a file field (curl -F file=@image.png; `to`
                                            and `seed` may be form fields too) -> the translation as image/png
"""
from __future__ import annotations

import email.parser
import email.policy
import html
import http.server
import io
import json
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import warnings
from urllib.parse import parse_qs, urlsplit

import torch
from PIL import Image, ImageOps

from .config import MAX_PIXELS
from .data import has_alpha, too_large
from .errors import ImxlateError

MAX_UPLOAD_MB = 20.0
MAX_SAMPLES = 8
THREADS = 16  # connections served at once; a browser opens up to 6 to one host
READ_TIMEOUT = 30.0  # seconds a client may send nothing before it is dropped (per read, as nginx's timeouts)
MAX_FORM_PARTS = 32  # a form to try a model has a file and a field or two


class Refusal(ImxlateError):
    """A request the server will not serve, with the HTTP status that says why (413 too large, 415 not an
    image, ...); `str()` is the one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_stochastic(tr, to: str) -> bool:
    """Whether translations into `to` vary with the seed (two seeds, one small fixed input)."""
    side = -(-64 // tr.family.size_multiple) * tr.family.size_multiple
    x = torch.linspace(-1, 1, 3 * side * side).reshape(3, side, side)
    return not torch.equal(tr.translate(x, to, seed=0), tr.translate(x, to, seed=1))


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's first line (or its type's name), at most `limit` characters: fit for a one-line answer."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Uploaded bytes -> an RGB or RGBA image (EXIF orientation applied); a Refusal when it is not an image
    (415) or, read from its header before decoding, has more than `max_pixels` pixels (413)."""
    not_image = "the upload is not an image this page can read"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            img = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:  # its message names the BytesIO object, of no use to the user
        raise Refusal(415, f"{not_image}: send a PNG, JPEG, WebP or another format Pillow opens") from None
    except Image.DecompressionBombError as e:
        raise Refusal(413, f"the image is too large ({e})") from None
    refused = too_large(*img.size, max_pixels)
    if refused:
        raise Refusal(413, refused.split(";")[0])
    try:
        img = ImageOps.exif_transpose(img)
        img.load()
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, struct.error...) on broken files
        raise Refusal(415, f"{not_image} ({one_line(e)})") from None
    return img.convert("RGBA" if has_alpha(img) else "RGB")


def form_parts(body: bytes, boundary: str) -> list[tuple[email.message.Message, bytes]]:
    """A multipart/form-data body -> its parts as (headers, content) (RFC 7578: each part follows a line
    `--boundary`, the last line is `--boundary--`); a Refusal when it is not one."""
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    data = b"\r\n" + body  # the first delimiter starts the body, without the line break before the others
    if data.count(delimiter) > MAX_FORM_PARTS + 1:
        raise Refusal(400, f"the form has more than {MAX_FORM_PARTS} fields; send only the image")
    parts = []
    for chunk in data.split(delimiter)[1:]:  # [0]: the preamble
        if chunk.startswith(b"--"):  # the closing delimiter; what follows is the epilogue
            return parts
        chunk = chunk.lstrip(b" \t")  # transport padding after a delimiter (RFC 2046)
        head, sep, content = chunk.partition(b"\r\n\r\n")  # head: the line break, then the part's headers
        if not chunk.startswith(b"\r\n") or not sep:
            break
        parts.append((email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head[2:]), content))
    raise Refusal(400, "the multipart/form-data upload is cut short or malformed (no closing boundary)")


def upload(body: bytes, headers) -> tuple[bytes, dict[str, str]]:
    """A request's body -> (the image's bytes, the form's text fields): the first file field of a
    multipart/form-data form, else the body itself (what the page sends)."""
    if headers.get_content_type() != "multipart/form-data":
        return body, {}
    boundary = headers.get_boundary()
    if not boundary:
        raise Refusal(400, "the multipart/form-data upload names no boundary in its Content-Type")
    image, fields = None, {}
    for part, content in form_parts(body, boundary):
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            image = content if image is None else image
        elif isinstance(name, str):
            fields[name] = content.decode("utf-8", "replace")
    if image is None:
        raise Refusal(400, "the form has no file field: send the image as one (curl -F file=@image.png)")
    return image, fields


def parse_seed(text: str | None) -> int | None:
    """The `seed` parameter -> a seed for torch (or None when not given); a Refusal when not a whole number."""
    if not text:
        return None
    try:
        return int(text) % 2**63
    except ValueError:
        raise Refusal(400, "seed must be a whole number") from None


def translate_upload(server: "Server", data: bytes, to: str, seed: int | None) -> Image.Image:
    """Decode and translate an upload, one at a time (so one decoded image waits in memory, not one per
    thread); a Refusal (422) when the model cannot take its size (a 1x10000 strip: padding and instance
    norm need a few pixels on each side after downsampling)."""
    with server.forward:
        img = decode(data)
        try:
            return server.translator.translate(img, to, seed=seed)
        except (RuntimeError, ValueError, MemoryError) as e:
            raise Refusal(422, f"the model could not translate a {img.width}x{img.height} image "
                               f"({one_line(e)}); try a larger or less elongated image") from None


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
    """One connection: one request (HTTP/1.0, closed after the answer), answered or refused with a status."""

    server: "Server"
    answered = False
    unread = False  # whether the request may have a body not read yet (see linger)

    def setup(self):
        self.timeout = self.server.read_timeout  # StreamRequestHandler sets it on the socket
        super().setup()

    def log_message(self, format, *args):  # quiet: the console shows only the URL and errors
        pass

    def answer(self, status: int, body: bytes, ctype: str) -> None:
        self.answered = True
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, status: int, message: str) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        try:
            self.answer(status, message.encode(), "text/plain; charset=utf-8")
        except OSError:  # the client is gone or stopped reading: no one to tell
            return
        if self.unread:
            self.linger()

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, an unknown method...) as one plain line too."""
        self.refuse(code, message or self.responses.get(code, ("refused",))[0])

    def linger(self, seconds: float = 5.0) -> None:
        """After refusing a request whose body was not read: end the answer, then read and drop what the client
        still sends until it closes (at most `seconds`), since closing a socket with unread data resets the
        connection and the client could lose the answer."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(1 << 20):
                    break
        except OSError:
            pass

    def read_body(self) -> bytes:
        """The request's body, once its Content-Length is known to be there, one whole number, and within the
        limit: nothing is read (or held in memory) before."""
        if "Transfer-Encoding" in self.headers:
            raise Refusal(411, "chunked uploads are not taken: send the image with a Content-Length "
                               "(curl -F file=@image.png or --data-binary @image.png does)")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise Refusal(411, "send the image with a Content-Length")
        if len(set(values)) > 1 or not re.fullmatch(r"[0-9]{1,15}", values[0].strip()):
            raise Refusal(400, f"Content-Length must be one whole number of bytes, not {', '.join(values)[:40]!r}")
        length, limit = int(values[0]), self.server.max_upload
        if length > limit:
            raise Refusal(413, f"the upload is {length / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB "
                               "(imxlate serve --max-upload-mb)")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise Refusal(408, f"the upload stalled: nothing came for {self.timeout:g} s") from None
        if len(body) < length:
            raise Refusal(400, f"the upload ended after {len(body)} of its {length} bytes")
        self.unread = False
        return body

    def do_GET(self):
        if urlsplit(self.path).path != "/":
            return self.refuse(404, "not found: the page is at /")
        self.answer(200, self.server.page.encode(), "text/html; charset=utf-8")

    def do_POST(self):
        self.unread = True
        try:
            self.translate()
        except Refusal as e:
            self.refuse(e.status, str(e))
        except ImxlateError as e:
            self.refuse(400, str(e))
        except (ConnectionError, TimeoutError):  # the client went away or stopped reading: no one to answer
            self.close_connection = True
        except Exception as e:  # a bug: the client still gets an answer, the console the traceback
            traceback.print_exc()
            if not self.answered:
                self.refuse(500, f"internal error ({type(e).__name__}: {one_line(e)}); please report it")

    def translate(self) -> None:
        """POST /translate: read, check and decode the upload, translate it, answer the PNG."""
        url = urlsplit(self.path)
        if url.path != "/translate":
            raise Refusal(404, "not found: POST images to /translate?to=DOMAIN")
        data, fields = upload(self.read_body(), self.headers)
        params = {**fields, **{k: v[-1] for k, v in parse_qs(url.query).items()}}
        to = params.get("to", "")
        self.server.translator.check_domain(to)
        seed = parse_seed(params.get("seed"))
        out = translate_upload(self.server, data, to, seed)
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        self.answer(200, buf.getvalue(), "image/png")


class Server(http.server.ThreadingHTTPServer):
    """The page's server for a loaded Translator; `serve_forever()` runs it, `shutdown()` stops it."""

    request_queue_size = 64  # connections the system holds while all `threads` are busy
    # Connections' threads are waited for (server_close, then Python's exit): a daemon thread still writing when
    # the interpreter shuts down aborts the process (SIGABRT after Ctrl-C, seen once in CI).
    daemon_threads = False

    def __init__(self, translator, host: str = "127.0.0.1", port: int = 0, max_upload_mb: float = MAX_UPLOAD_MB,
                 threads: int = THREADS, read_timeout: float = READ_TIMEOUT):
        if not 0 <= port <= 65535:
            raise ImxlateError(f"--port {port}: give a port from 0 to 65535 (0 picks a free one)")
        if not max_upload_mb > 0:
            raise ImxlateError(f"--max-upload-mb must be more than 0, not {max_upload_mb}")
        if threads < 1:
            raise ImxlateError(f"--threads must be at least 1, not {threads}")
        if not read_timeout > 0:
            raise ImxlateError(f"the read timeout must be more than 0 seconds, not {read_timeout}")
        self.translator, self.max_upload, self.read_timeout = translator, int(max_upload_mb * 1e6), read_timeout
        self.slots = threading.BoundedSemaphore(threads)
        self.forward = threading.Lock()  # the model is not made for concurrent calls
        self.open, self.open_lock = set(), threading.Lock()  # connections being served, cut by server_close
        self.page = page(translator, {d: is_stochastic(translator, d) for d in targets(translator)}, self.max_upload)
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise ImxlateError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                               "choose another --port (0 picks a free one)") from None

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # without http.server's name look-up (no network needed)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        """Serve a new connection in its own thread once one of the `threads` is free (until then it waits, and
        the connections after it wait in the listen queue; so does shutdown())."""
        self.slots.acquire()
        with self.open_lock:
            self.open.add(request)
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread started: the slot is free again
            self.done_with(request)
            raise
        # A KeyboardInterrupt (Ctrl-C) may come while Thread.start waits for the thread it started, which then
        # releases the slot itself: it is let through, and serve() stops.

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.done_with(request)

    def done_with(self, request) -> None:
        with self.open_lock:
            self.open.discard(request)
        self.slots.release()

    def handle_error(self, request, client_address):
        """A connection that broke while it was answered (the client left, or server_close cut it) is no error:
        nothing to report. Anything else prints its traceback, as socketserver does."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def server_close(self):
        """Stop listening, cut the connections still open (a stalled upload, a client lingering) so that their
        threads end at once, and wait for them."""
        with self.open_lock:
            for request in self.open:
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        super().server_close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def serve(translator, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = MAX_UPLOAD_MB,
          threads: int = THREADS, say=print) -> None:
    """Serve the page until Ctrl-C, then close the socket and return."""
    server = Server(translator, host, port, max_upload_mb, threads)
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
