"""The try-a-model page: a real server on a free port of 127.0.0.1 answers the page, translates a posted PNG
into a PNG of the same size, refuses what it must with a clear message, and stops on Ctrl-C."""
from __future__ import annotations

import http.client
import io
import os
import queue
import re
import signal
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


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        conn.close()


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
        assert status == 400 and b"not an image" in body
        assert request(port, "GET", "/elsewhere")[0] == 404

        status, _, _ = request(port, "POST", "/translate?to=photos", png(33, 51))  # still serving after refusals
        assert status == 200


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
