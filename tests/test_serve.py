"""The try-a-model page: a real server on a free port of 127.0.0.1 answers the page, translates a posted PNG
(raw or in a multipart form) into a PNG of the same size, refuses what it must with an HTTP status and a
one-line message (never a dropped connection), serves others while a client idles, and stops on Ctrl-C.
Every socket has a 30 s timeout, so a server that hangs fails a test instead of stalling it."""
from __future__ import annotations

import http.client
import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

import imxlate
from imxlate.serve import Server

from conftest import cli, write_images


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve")
    write_images(data / "photos", 4, seed=1)
    write_images(data / "vangogh", 4, seed=2)
    cli("train", "--data", data, "--domains", "photos", "vangogh", "--crop-size", "32", "--load-size", "36",
        "--ngf", "8", "--ndf", "8", "--n-blocks", "1", "--steps", "2", "--workers", "0", "--out", data / "run",
        "--quiet")
    return data / "run" / "model.safetensors"


@contextmanager
def running(server: Server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
        assert not thread.is_alive()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        conn.close()


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """Read one HTTP answer from a connected socket -> (status, body)."""
    r = http.client.HTTPResponse(sock)
    r.begin()
    return r.status, r.read()


def raw(port: int, head: bytes) -> tuple[int, bytes]:
    """Send `head` (a request line and headers, no body) on a new connection and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        return answer(sock)


def form(boundary: str, fields: dict[str, str], files: dict[str, bytes]) -> bytes:
    """A multipart/form-data body as browsers and curl -F write it."""
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, data in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def png(width: int, height: int, noise: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if noise else np.full((height, width, 3), 90, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_page_translates_a_png_and_refuses_what_it_must(model):
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0, max_upload_mb=0.05)
    assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    with running(server) as port:
        status, ctype, body = request(port, "GET", "/")
        page = body.decode()
        assert status == 200 and ctype.startswith("text/html")
        assert "<option>photos</option>" in page and "<option>vangogh</option>" in page
        assert not re.search(r"(?:src|href)=['\"]?https?://", page)  # nothing fetched from elsewhere

        status, ctype, body = request(port, "POST", "/translate?to=vangogh", png(37, 29))
        assert status == 200 and ctype == "image/png", body[:200]
        out = Image.open(io.BytesIO(body))
        assert out.format == "PNG" and out.size == (37, 29)

        big = png(200, 200, noise=True)
        assert len(big) > 50_000
        status, _, body = request(port, "POST", "/translate?to=vangogh", big)
        assert status == 413 and b"the limit is 0.05 MB" in body

        status, _, body = request(port, "POST", "/translate?to=monet", png(8, 8))
        assert status == 400 and b"does not know 'monet'" in body
        status, _, body = request(port, "POST", "/translate?to=photos", b"not an image")
        assert status == 415 and body.startswith(b"the upload is not an image") and b"BytesIO" not in body
        assert request(port, "GET", "/elsewhere")[0] == 404

        status, _, _ = request(port, "POST", "/translate?to=photos", png(33, 51))  # still serving after refusals
        assert status == 200


def test_a_multipart_form_upload_translates_like_the_raw_body(model):
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0)
    image = png(24, 20, noise=True)  # noise: CR and LF bytes inside the file
    with running(server) as port:
        status, _, raw_out = request(port, "POST", "/translate?to=vangogh&seed=3", image)
        assert status == 200
        multipart = {"Content-Type": "multipart/form-data; boundary=----imxlate7MA4YWxk"}
        body = form("----imxlate7MA4YWxk", {"to": "vangogh", "seed": "3"}, {"file": image})
        status, ctype, out = request(port, "POST", "/translate", body, multipart)
        assert status == 200 and ctype == "image/png", out[:200]
        assert out == raw_out  # the same pixels: the file field's bytes came through exactly

        status, _, msg = request(port, "POST", "/translate?to=vangogh", form("----imxlate7MA4YWxk", {"to": "x"}, {}),
                                 multipart)
        assert status == 400 and b"no file field" in msg
        status, _, msg = request(port, "POST", "/translate?to=vangogh", body[:-30], multipart)
        assert status == 400 and b"cut short" in msg


def test_a_size_the_model_cannot_take_and_a_bug_are_answered(model, monkeypatch):
    tr = imxlate.load(model, device="cpu")
    server = Server(tr, "127.0.0.1", 0)
    with running(server) as port:
        status, ctype, body = request(port, "POST", "/translate?to=vangogh", png(1, 10000))
        assert status == 422 and ctype.startswith("text/plain") and b"could not translate a 1x10000 image" in body
        assert b"\n" not in body

        def broken(*args, **kwargs):
            return {}["no such key"]  # stands for any bug below the handler

        monkeypatch.setattr(tr, "translate", broken)
        status, _, body = request(port, "POST", "/translate?to=vangogh", png(8, 8))
        assert status == 500 and body.startswith(b"internal error (KeyError") and b"\n" not in body


def test_bad_content_lengths_are_refused_before_any_body_byte(model):
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0, max_upload_mb=1)
    post = b"POST /translate?to=vangogh HTTP/1.1\r\nHost: localhost\r\n"
    with running(server) as port:
        # headers only, the connection left open: each answer must come without waiting for a body
        assert raw(port, post + b"Content-Length: -1\r\n\r\n") == (400, b"Content-Length must be one whole "
                                                                        b"number of bytes, not '-1'")
        assert raw(port, post + b"Content-Length: 12abc\r\n\r\n")[0] == 400
        assert raw(port, post + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n")[0] == 400
        status, body = raw(port, post + b"\r\n")
        assert status == 411 and b"Content-Length" in body
        status, body = raw(port, post + b"Content-Length: 300000000\r\n\r\n")
        assert status == 413 and body == b"the upload is 300.0 MB; the limit is 1 MB (imxlate serve --max-upload-mb)"
        status, body = raw(port, post + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        assert status == 411 and b"chunked" in body
        assert raw(port, b"BREW /pot HTTP/1.1\r\n\r\n")[0] == 501
        assert request(port, "POST", "/translate?to=vangogh", png(16, 16))[0] == 200


def test_an_idle_connection_holds_up_no_one(model):
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0)
    with running(server) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:  # connected, sends nothing
            status, ctype, _ = request(port, "POST", "/translate?to=vangogh", png(37, 29))
            assert status == 200 and ctype == "image/png"
            idle.sendall(b"GET / HTTP/1.0\r\n\r\n")  # it was still open all along, and is served too
            assert answer(idle)[0] == 200


def test_connections_past_the_thread_bound_wait_for_a_free_thread(model):
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0, threads=2)
    with running(server) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        done = threading.Event()
        got: list = []
        waiting = threading.Thread(target=lambda: (got.append(request(port, "GET", "/")), done.set()), daemon=True)
        waiting.start()
        assert not done.wait(0.5)  # both threads are taken: it waits (queued, not refused or dropped)
        idle[0].close()
        waiting.join(timeout=30)
        assert done.is_set() and got[0][0] == 200
        idle[1].close()


def test_a_silent_client_is_dropped_after_the_read_timeout(model):
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0, read_timeout=1)
    with running(server) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as idle:
            assert idle.recv(100) == b""  # closed by the server, not by our 30 s timeout
        status, body = raw(port, b"POST /translate?to=vangogh HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        assert status == 408 and b"the upload stalled" in body


def test_serve_command_prints_its_url_and_stops_on_ctrl_c(model, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "imxlate", "serve", str(model), "--port", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    said = []
    try:
        for _ in range(20):  # a few lines at most before the URL
            said.append(lines.get(timeout=120))
            url = re.search(r"http://127\.0\.0\.1:(\d+)/", said[-1])
            if url:
                break
        assert url, said
        status, _, body = request(int(url.group(1)), "GET", "/")
        assert status == 200 and b"<form" in body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    reader.join(timeout=30)
    while not lines.empty():
        said.append(lines.get())
    assert "Stopped." in "".join(said) and "Traceback" not in "".join(said)
    assert os.listdir(tmp_path) == []  # nothing written


def test_bad_port_is_one_error_line(model):
    r = cli("serve", model, "--port", "70000", ok=False)
    assert r.exit_code == 2 and r.output.startswith("error: --port 70000") and "Traceback" not in r.output


def test_closing_the_server_cuts_open_connections_and_waits_for_their_threads(model):
    """No connection's thread outlives server_close (a thread still running when Python exits can abort it)."""
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0, read_timeout=600)
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as idle:
        with running(server) as port:
            assert request(port, "GET", "/")[0] == 200
            idle.sendall(b"POST /translate?to=vangogh HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")  # stalls
        assert not [t for t in threading.enumerate() if "process_request_thread" in t.name]
        try:  # cut by the server, not after its 600 s read timeout: an end of stream, or a reset when the
            assert idle.recv(100) == b""  # server's side still held unread bytes as it closed
        except ConnectionResetError:
            pass


def test_a_connection_broken_while_answered_is_not_reported(model, capsys):
    """server_close cuts a connection whose page is still being written: its BrokenPipeError prints nothing;
    any other error in a handler still prints its traceback."""
    server = Server(imxlate.load(model, device="cpu"), "127.0.0.1", 0)
    try:
        for error in (BrokenPipeError(32, "Broken pipe"), ValueError("a bug")):
            try:
                raise error
            except Exception:
                server.handle_error(None, ("127.0.0.1", 1))
        err = capsys.readouterr().err
        assert "ValueError: a bug" in err and "BrokenPipeError" not in err
    finally:
        server.server_close()
