"""The browser page's server (glama_deploy.app): real uploads through the ASGI app with the bundled model.

Bad uploads get a readable message and a 4xx and the server keeps serving; the queue refuses with
"busy, N ahead" when full; a 4000x3000 photo goes through the tiled pipeline with its known pixels
unchanged.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from glama_deploy.app import Limits, create_app
from glama_deploy.engines import BaseEngine, EngineError, create_engine
from tests.conftest import DEFAULT_WEIGHTS, ROOT, SAMPLES

PHOTO = SAMPLES / "mate-dune.jpg"


def png(a: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", a)
    assert ok
    return buf.tobytes()


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def post(client, image: bytes, mask: bytes, mode: str | None = None):
    data = {"mode": mode} if mode else {}
    return client.post("/api/inpaint", files={"image": ("photo", image), "mask": ("mask.png", mask)}, data=data)


def decode(content: bytes) -> np.ndarray:
    out = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out is not None
    return out


@pytest.fixture(scope="module")
def engine():
    return create_engine("torch", str(DEFAULT_WEIGHTS))


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine, Limits(max_upload_bytes=8 * 2**20, max_pixels=13_000_000))) as c:
        yield c


def check_inpainted(result: np.ndarray, photo: np.ndarray, hole: np.ndarray) -> None:
    """Known pixels bit-identical; the hole really filled (differs from the photo there)."""
    assert result.shape == photo.shape
    keep = hole == 0
    assert np.array_equal(result[keep], photo[keep]), "known pixels changed"
    diff = np.abs(result[~keep].astype(int) - photo[~keep].astype(int)).mean()
    assert diff > 3, f"hole barely changed (mean abs diff {diff:.2f})"


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("/", "/static/app.js", "/static/app.css"):
        text = client.get(name).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    status = client.get("/api/status").json()
    assert status["engine"]["engine"] == "torch" and "mate-dune.jpg" in status["samples"]
    assert client.get("/samples/mate-dune.jpg").content == PHOTO.read_bytes()


def test_sample_photo_full_mode(client):
    photo = cv2.imread(str(PHOTO))[128:512, 256:768]  # a 512x384 part: the whole photo costs 3x more
    h, w = photo.shape[:2]
    hole = box_mask(h, w, 100, 230, 150, 350)
    r = post(client, png(photo), png(hole))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-glama-mode"] == "full" and r.headers["x-glama-size"] == f"{w}x{h}"
    assert float(r.headers["x-glama-seconds"]) > 0
    check_inpainted(decode(r.content), photo, hole)


def test_big_image_runs_tiled(client):
    """4000x3000: auto picks the tiled pipeline; the answer is full resolution, known pixels exact."""
    photo = cv2.resize(cv2.imread(str(PHOTO)), (4000, 3000), interpolation=cv2.INTER_LINEAR)
    ok, jpg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    photo = cv2.imdecode(jpg, cv2.IMREAD_COLOR)  # what the server decodes
    hole = box_mask(3000, 4000, 1400, 1640, 2100, 2380)
    t0 = time.perf_counter()
    r = post(client, jpg.tobytes(), png(hole))
    assert r.status_code == 200, r.text
    assert r.headers["x-glama-mode"] == "tiled" and r.headers["x-glama-size"] == "4000x3000"
    check_inpainted(decode(r.content), photo, hole)
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("case, status, words", [
    ("text", 400, "image: not a readable image"),
    ("truncated", 400, "image: truncated or corrupt JPEG"),
    ("mask_size", 400, "mask is 100x80 but the image is 1024x640"),
    ("mask_text", 400, "mask: not a readable mask"),
    ("empty_mask", 400, "the mask is empty"),
    ("no_mask", 400, "mask: missing"),
    ("mode", 400, "unknown mode 'fast'"),
    ("full_too_big", 400, "full mode takes at most"),
    ("too_many_bytes", 413, "above this server's limit of 8 MB"),
    ("too_many_pixels", 413, "above this server's limit of 13 MP"),
])
def test_bad_uploads(client, case, status, words):
    good = PHOTO.read_bytes()
    hole = png(box_mask(640, 1024, 10, 50, 10, 50))
    if case == "text":
        r = post(client, b"hello, not an image\n" * 20, hole)
    elif case == "truncated":
        r = post(client, good[: len(good) // 2], hole)
    elif case == "mask_size":
        r = post(client, good, png(box_mask(80, 100, 0, 10, 0, 10)))
    elif case == "mask_text":
        r = post(client, good, b"{not: a mask}")
    elif case == "empty_mask":
        r = post(client, good, png(np.zeros((640, 1024), np.uint8)))
    elif case == "no_mask":
        r = client.post("/api/inpaint", files={"image": ("photo.jpg", good)})
    elif case == "mode":
        r = post(client, good, hole, mode="fast")
    elif case == "full_too_big":
        big = cv2.imencode(".jpg", np.full((2500, 2000, 3), 128, np.uint8))[1].tobytes()
        r = post(client, big, png(box_mask(2500, 2000, 0, 9, 0, 9)), mode="full")
    elif case == "too_many_bytes":
        r = post(client, good + b"\0" * (9 * 2**20), hole)
    else:  # a tiny PNG that decodes to 4000x4000: refused from its header, before decoding
        r = post(client, png(np.zeros((4000, 4000), np.uint8)), hole)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert words in message and "Traceback" not in message and "/tmp" not in message
    # the server keeps serving
    assert client.get("/api/status").json()["pending"] == 0


class GatedEngine(BaseEngine):
    """Fills holes with grey once ``gate`` opens: holds requests in the queue on purpose."""

    name = "gated"

    def __init__(self):
        self.gate = threading.Event()

    def _run(self, image, mask):
        assert self.gate.wait(30)
        return np.full_like(image, 0.5)


def test_queue_limit():
    engine = GatedEngine()
    image = png(cv2.imread(str(PHOTO))[:64, :64])
    hole = png(box_mask(64, 64, 16, 48, 16, 48))
    with TestClient(create_app(engine, Limits(max_queue=1))) as client:
        answers = []
        workers = [threading.Thread(target=lambda: answers.append(post(client, image, hole))) for _ in range(2)]
        for t in workers:  # one runs, one waits
            t.start()
        deadline = time.monotonic() + 20
        while client.get("/api/status").json()["pending"] < 2:
            assert time.monotonic() < deadline, "requests never reached the queue"
            time.sleep(0.05)
        busy = post(client, image, hole)
        assert busy.status_code == 503
        assert busy.json()["ahead"] == 2 and busy.json()["error"].startswith("busy: 2 request(s) ahead")
        engine.gate.set()
        for t in workers:
            t.join(30)
        assert [a.status_code for a in answers] == [200, 200]
        result = decode(answers[0].content)
        assert (result[16:48, 16:48] == 128).all()  # the engine's grey, composited
        assert client.get("/api/status").json()["pending"] == 0
        assert post(client, image, hole).status_code == 200  # free again


class BrokenEngine(BaseEngine):
    """A backend that fails (a Triton server gone away, a GPU out of memory)."""

    name = "broken"

    def _run(self, image, mask):
        raise EngineError("Triton http localhost:8000: ConnectionRefusedError: [Errno 111] Connection refused")


def test_engine_failure_is_one_line_and_server_goes_on():
    image = png(cv2.imread(str(PHOTO))[:64, :64])
    hole = png(box_mask(64, 64, 16, 48, 16, 48))
    with TestClient(create_app(BrokenEngine())) as client:
        for _ in range(2):
            r = post(client, image, hole)
            assert r.status_code == 500
            assert r.json() == {"error": "engine: Triton http localhost:8000: ConnectionRefusedError: "
                                         "[Errno 111] Connection refused"}
        assert client.get("/api/status").json()["pending"] == 0


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not weights")
    r = subprocess.run([sys.executable, "-m", "glama_deploy.app", "--weights", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: not a safetensors file (no JSON header)"
    r = subprocess.run([sys.executable, "-m", "glama_deploy.app", "--weights", "no-such-model", "--port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: no-such-model: ") and r.stderr.count("\n") == 1
    with socket.socket() as taken:  # a port in use: refused before the model loads
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "glama_deploy.app", "--port", str(port)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen (") and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "glama_deploy.app", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--host" in r.stdout and "0.0.0.0" in r.stdout
