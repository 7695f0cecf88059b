"""``facepcl serve``: a real uvicorn server on 127.0.0.1, called over HTTP, gives facepcl.embed's codes."""

from __future__ import annotations

import concurrent.futures
import io
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import facepcl

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from facepcl.serve import create_app  # noqa: E402

LIMIT = 400_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn in a thread of the test process, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def model():
    return facepcl.load("pcl-demo", device="cpu")


@pytest.fixture(scope="module")
def server(model):
    with _Server(create_app(model, max_body=LIMIT, concurrency=2)) as url:
        yield url


def _post(url: str, data: bytes, name: str = "photo.jpg", **params) -> httpx.Response:
    return httpx.post(f"{url}/embed", files={"file": (name, data, "application/octet-stream")}, params=params,
                      timeout=120)


def _as_result_arrays(faces: list[dict], feature: str) -> np.ndarray:
    return np.array([f[feature] for f in faces], dtype=np.float32)


def test_embed_over_http_equals_facepcl_embed(server, model, photo_paths):
    path = photo_paths["multi_face.jpg"]
    data = path.read_bytes()
    if len(data) > LIMIT:
        pytest.skip("sample photo larger than the test limit")
    r = _post(server, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["encoder_sha256"] == facepcl._utils.digest.encoder_digest(model)
    want = facepcl.embed(str(path), model=model)
    assert len(body["faces"]) == len(want) > 1
    for f in ("face", "pose", "trunk"):
        np.testing.assert_array_equal(_as_result_arrays(body["faces"], f), getattr(want, f))
    np.testing.assert_array_equal(np.array([f["bbox"] for f in body["faces"]], np.float32), want.bbox)
    np.testing.assert_array_equal(np.array([f["kps"] for f in body["faces"]], np.float32), want.kps)


def test_options_as_query_parameters(server, photo_paths):
    data = photo_paths["multi_face.jpg"].read_bytes()
    r = _post(server, data, features="face,pose", max_faces=1)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1
    assert set(faces[0]) == {"bbox", "kps", "det_score", "face", "pose"}
    r = _post(server, data, features="ears")
    assert r.status_code == 422
    assert "face,pose,trunk" in r.json()["error"]
    strict = _post(server, data, det_threshold=0.99).json()["faces"]
    assert all(f["det_score"] >= 0.99 for f in strict)


def test_bad_bodies_get_clear_json_errors(server):
    r = _post(server, b"this is not an image", name="notes.txt")
    assert r.status_code == 422
    assert "notes.txt" in r.json()["error"]
    r = _post(server, b"", name="empty.jpg")
    assert r.status_code == 422
    assert "empty" in r.json()["error"]
    big = b"\xff" * (LIMIT + 1)
    r = _post(server, big)  # with a Content-Length: refused before the body is read
    assert r.status_code == 413
    assert "limit" in r.json()["error"]

    def chunks():  # a valid multipart stream without a Content-Length: refused once it passes the limit
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for _ in range(LIMIT // 65536 + 2):
            yield b"\0" * 65536
        yield b"\r\n--x--\r\n"

    r = httpx.post(f"{server}/embed", content=chunks(), timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    assert r.json()["error"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # still serving


def test_concurrent_requests_give_the_serial_results(server, photo_paths):
    datas = [photo_paths[n].read_bytes() for n in ("multi_face.jpg", "single_face.jpg", "astronaut.png")]
    datas = [d for d in datas if len(d) <= LIMIT]
    serial = [_post(server, d).json() for d in datas]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda d: _post(server, d).json(), datas * 2))
    assert parallel == serial * 2


def test_one_embedder_shared_by_four_threads_gives_the_serial_results(model, photo_paths):
    embedder = facepcl.FaceEmbedder(model)
    paths = [str(photo_paths[n]) for n in ("multi_face.jpg", "single_face.jpg", "astronaut.png", "BWPictureHuman.jpg")]
    serial = [embedder.embed(p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(embedder.embed, paths * 2))
    for got, want in zip(parallel, serial * 2, strict=True):
        for f in ("face", "pose", "trunk", "bbox", "kps", "det_score"):
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f))


def test_the_command_binds_127_0_0_1_by_default(random_model_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "facepcl", "serve", "--model", str(random_model_dir), "--port",
                             str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        else:
            raise AssertionError("facepcl serve did not answer")
        assert r.json()["status"] == "ok"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # an address of this machine that is not loopback
            s.connect(("192.0.2.1", 9))  # TEST-NET-1, no packet is sent for a UDP connect
            own = s.getsockname()[0]
        if not own.startswith("127."):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://{own}:{port}/health", timeout=2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"127.0.0.1:{port}" in out


def _png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_image_without_a_face_gives_no_faces(server):
    r = _post(server, _png(64), name="black.png")
    assert r.status_code == 200
    assert r.json()["faces"] == []
