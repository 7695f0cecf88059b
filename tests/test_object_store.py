"""`facepcl embed` against a real S3 API: moto's server on 127.0.0.1, reached over HTTP by s3fs.

Nothing is mocked below HTTP: uploads, listings, conditional PUTs and
failures all go over the wire. Failed uploads come from a small proxy in
front of the server that answers 503 to chosen PUTs. Every run embeds small
synthetic crops without detection, one image per batch, so a run that failed
and was resumed must give bit-identical rows to an uninterrupted one.
"""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facepcl.cli import main
from facepcl.export import column_to_numpy, iter_inputs, read_embeddings, read_errors
from facepcl.io import storage

from ._threads import torch_threads

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server")

N_IMAGES = 9
BUCKET = "facepcl-test"


class _S3:
    """The server's URL and a filesystem to look at the bucket with."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)

    def keys(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        base = f"{BUCKET}/{prefix}/"
        try:
            return sorted(k[len(base):] for k in self.fs.find(base) if k.startswith(base))
        except FileNotFoundError:
            return []


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a free port), the AWS_* variables pointing at it, and uploaded crops."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(k)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore gives up at once: retrying is facepcl's job here
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        missing = str(tmp_path_factory.mktemp("aws") / "none")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
        mp.setenv("AWS_CONFIG_FILE", missing)
        mp.setattr(storage, "BACKOFF_SECONDS", 0.01)
        s = _S3(endpoint)
        s.fs.mkdir(BUCKET)
        crops = tmp_path_factory.mktemp("crops")
        rng = np.random.default_rng(7)
        for i in range(N_IMAGES):
            path = crops / f"c{i:02d}.png"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
            s.fs.put_file(str(path), f"{BUCKET}/in/{path.name}")
        s.fs.pipe_file(f"{BUCKET}/in/notes.txt", b"not an image")  # not a media file: not an input
        s.crops = crops
        try:
            yield s
        finally:
            storage._FILESYSTEMS.clear()
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def url(prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}"


ARGS = ["--no-detect", "--batch-size", "1", "--num-workers", "1", "--device", "cpu", "--shard-size", "2",
        "--no-progress"]


@pytest.fixture()
def embed(capsys, random_model_dir):
    """Run `facepcl embed INPUT... -o OUT` in this process; returns (exit code, stdout + stderr)."""
    def call(inputs: list, out: str, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = main(["embed", *map(str, inputs), "-o", str(out), "--model", str(random_model_dir), *ARGS, *extra])
        captured = capsys.readouterr()
        return rc, captured.out + captured.err

    with torch_threads(1):
        yield call


@pytest.fixture()
def reference(s3, embed, tmp_path) -> Path:
    out = tmp_path / "reference"
    rc, err = embed([s3.crops], out)
    assert rc == 0, err
    return out


def assert_same_rows(out: str, ref: Path) -> None:
    a, b = read_embeddings(out), read_embeddings(ref)
    assert a.num_rows == b.num_rows == N_IMAGES
    assert [p.rsplit("/", 1)[-1] for p in a.column("path").to_pylist()] == \
        [os.path.basename(p) for p in b.column("path").to_pylist()]
    for name in ("item", "face_index", "width", "height"):
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    for name in ("face", "pose", "trunk", "bbox", "kps"):
        np.testing.assert_array_equal(column_to_numpy(a, name), column_to_numpy(b, name), err_msg=name)


def test_s3_in_and_out_writes_the_rows_of_a_local_run(s3, embed, reference) -> None:
    rc, err = embed([url("in")], url("out"))
    assert rc == 0, err
    assert_same_rows(url("out"), reference)
    assert all(p.startswith(url("in/")) for p in read_embeddings(url("out")).column("path").to_pylist())
    keys = s3.keys("out")
    assert "_run.json" in keys and "_errors.jsonl" in keys
    assert len([k for k in keys if re.fullmatch(r"part-r00000-\d{6}\.parquet", k)]) == 5
    assert len([k for k in keys if k.startswith("_manifests/part-")]) == 5
    assert not [k for k in keys if ".lock" in k], "the lock object is released at the end"
    assert read_errors(url("out")) == []
    # resuming a finished export changes nothing
    rc, err = embed([url("in")], url("out"), "--resume")
    assert rc == 0, err
    assert "done: 0 inputs" in err
    assert s3.keys("out") == keys
    # --overwrite deletes the export's objects (and nothing else) and writes it again
    s3.fs.pipe_file(f"{BUCKET}/out/README.txt", b"kept")
    rc, err = embed([url("in")], url("out"), "--overwrite", "--shard-size", "5")
    assert rc == 0, err
    assert "--overwrite: deleted 12 file(s)" in err
    assert [k for k in s3.keys("out") if k.startswith("part-")] == ["part-r00000-000000.parquet",
                                                                    "part-r00000-000001.parquet"]
    assert "README.txt" in s3.keys("out")
    assert_same_rows(url("out"), reference)


@pytest.mark.slow
def test_the_ray_engine_reads_and_writes_object_stores(s3, embed, reference, ray_cluster) -> None:
    # Ray's workers do not see this test's AWS_* variables: the endpoint and keys travel as --storage-options
    options = json.dumps({"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"})
    rc, err = embed([url("in")], url("ray-out"), "--engine", "ray", "--storage-options", options)
    assert rc == 0, err
    assert_same_rows(url("ray-out"), reference)
    assert "testing" not in err
    assert not [k for k in s3.keys("ray-out") if ".lock" in k]


@pytest.mark.slow
def test_a_failed_upload_is_retried_and_a_hopeless_one_never_marks_its_shard_done(s3, embed, reference,
                                                                                 monkeypatch) -> None:
    with _FaultyProxy(s3.endpoint) as proxy:
        options = ["--storage-options", json.dumps({"endpoint_url": proxy.url})]
        # the first two PUTs of a data object answer 503: retried, the run completes
        proxy.fail(r"/out-retry/part-r00000-000001\.parquet", times=2)
        rc, err = embed([url("in")], url("out-retry"), *options)
        assert rc == 0, err
        assert proxy.failed == 2
        assert_same_rows(url("out-retry"), reference)

        # every PUT of shard 2's data fails: the run fails after its retries, and shard 2 has no manifest
        monkeypatch.setattr(storage, "RETRIES", 3)
        proxy.fail(r"/out-fail/part-r00000-000002\.parquet", times=1000)
        rc, err = embed([url("in")], url("out-fail"), *options)
        assert rc == 1
        assert "part-r00000-000002.parquet" in err and "after 3 attempts" in err and "--resume" in err
        assert proxy.failed == 3
        keys = s3.keys("out-fail")
        assert "_manifests/part-r00000-000001.json" in keys
        assert "_manifests/part-r00000-000002.json" not in keys
        assert read_embeddings(url("out-fail")).num_rows == 4  # shards 0 and 1 only
        assert not [k for k in keys if ".lock" in k], "a failed run releases its lock"

        proxy.fail(None)
        rc, err = embed([url("in")], url("out-fail"), *options, "--resume")
        assert rc == 0, err
        assert_same_rows(url("out-fail"), reference)


def test_a_prefix_is_listed_page_by_page_in_key_order(s3, monkeypatch) -> None:
    for key in ("b.png", "a.png", "a/x.png", "a-b/y.jpg", ".hidden.png", "notes.txt", "z/deep/w.PNG", "z/v.mp4"):
        s3.fs.pipe_file(f"{BUCKET}/list/{key}", b"x")
    monkeypatch.setattr(storage, "LIST_PAGE", 2)
    with _FaultyProxy(s3.endpoint) as proxy:
        items = list(iter_inputs([url("list") + "/"], storage_options={"endpoint_url": proxy.url}))
    # key order: "a-b/" < "a.png" < "a/" < "b.png" < "z/"; dot files and non-media objects are not inputs
    assert [i.path for i in items] == [url(f"list/{k}") for k in ("a-b/y.jpg", "a.png", "a/x.png", "b.png",
                                                                  "z/deep/w.PNG", "z/v.mp4")]
    assert [i.kind for i in items] == ["image"] * 5 + ["video"]
    assert sum("continuation-token" in r for r in proxy.requests) >= 3, "the top folder takes 4 pages of 2 keys"


def test_a_second_writer_is_refused_and_a_stale_lease_taken_over(s3, embed, reference) -> None:
    store = storage.open_store(url("out-lock"))
    held = store.lock("_manifests/.lock-r00000", "test").acquire()
    try:
        rc, err = embed([url("in")], url("out-lock"))
    finally:
        held.release()
    assert rc == 1
    assert "another process is writing" in err
    assert f"pid {os.getpid()}" in err and held.run in err
    assert not [k for k in s3.keys("out-lock") if k.startswith("part-")]

    # a writer on another machine that stopped renewing its lease long ago
    stale = {"host": "elsewhere", "pid": 1, "run": "0123", "started": 0, "renewed": time.time() - 3600,
             "lease_seconds": 60, "command": "facepcl embed"}
    s3.fs.pipe_file(f"{BUCKET}/out-lock/_manifests/.lock-r00000", json.dumps(stale).encode())
    rc, err = embed([url("in")], url("out-lock"))
    assert rc == 0, err
    assert_same_rows(url("out-lock"), reference)
    assert not [k for k in s3.keys("out-lock") if ".lock" in k]


def test_the_lease_is_renewed_and_a_lock_taken_over_is_noticed(s3) -> None:
    store = storage.open_store(url("lease"))
    lock = storage.ObjectLock(store, "_manifests/.lock-r00000", "test", lease=0.3).acquire()
    try:
        first = json.loads(s3.fs.cat_file(f"{BUCKET}/lease/_manifests/.lock-r00000"))
        assert first["run"] == lock.run and first["pid"] == os.getpid()
        deadline = time.monotonic() + 10
        while json.loads(s3.fs.cat_file(f"{BUCKET}/lease/_manifests/.lock-r00000"))["renewed"] == first["renewed"]:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        lock.check()  # still ours
        # another writer takes it over (as after a long stall): this writer notices and refuses to commit
        s3.fs.pipe_file(f"{BUCKET}/lease/_manifests/.lock-r00000", json.dumps({**first, "run": "other"}).encode())
        with pytest.raises(storage.StorageLockedError, match="lost its lock"):
            while time.monotonic() < deadline:
                lock.check()
                time.sleep(0.05)
    finally:
        lock.release()
    assert s3.fs.exists(f"{BUCKET}/lease/_manifests/.lock-r00000"), "release deletes only its own lock"


def test_an_orphan_data_object_is_ignored_by_readers_and_deleted_by_resume(s3, embed, reference) -> None:
    rc, err = embed([url("in")], url("out-orphan"))
    assert rc == 0, err
    # what an upload that died before its manifest leaves: a data object without a manifest
    s3.fs.copy(f"{BUCKET}/out-orphan/part-r00000-000004.parquet", f"{BUCKET}/out-orphan/part-r00000-000005.parquet")
    assert_same_rows(url("out-orphan"), reference)
    rc, err = embed([url("in")], url("out-orphan"), "--resume")
    assert rc == 0, err
    assert "redoing part-r00000-000005.parquet: it has no manifest" in err
    assert "part-r00000-000005.parquet" not in s3.keys("out-orphan")
    assert_same_rows(url("out-orphan"), reference)


def test_an_export_whose_first_upload_died_reads_as_empty(s3, embed, reference) -> None:
    rc, err = embed([url("in")], url("out-first"))
    assert rc == 0, err
    for key in s3.keys("out-first"):
        if key.startswith("_manifests/") or key == "_errors.jsonl":
            s3.fs.rm_file(f"{BUCKET}/out-first/{key}")
    assert read_embeddings(url("out-first")).num_rows == 0  # data objects without manifests are not rows


@pytest.mark.slow
def test_a_changed_shard_is_redone_and_a_changed_input_refused_on_resume(s3, embed, reference) -> None:
    rc, err = embed([url("in")], url("out-changed"))
    assert rc == 0, err
    # shard 3's object written again after its commit, with other bytes of the same kind
    base = f"{BUCKET}/out-changed"
    s3.fs.pipe_file(f"{base}/part-r00000-000003.parquet", s3.fs.cat_file(f"{base}/part-r00000-000002.parquet"))
    rc, err = embed([url("in")], url("out-changed"), "--resume")
    assert rc == 0, err
    assert "redoing part-r00000-000003.parquet" in err
    assert "redoing part-r00000-000004.parquet: comes after a shard that is redone" in err
    assert_same_rows(url("out-changed"), reference)

    # an input object replaced after the run embedded it: its rows would be stale
    original = s3.fs.cat_file(f"{BUCKET}/in/c01.png")
    try:
        s3.fs.pipe_file(f"{BUCKET}/in/c01.png", s3.fs.cat_file(f"{BUCKET}/in/c02.png"))
        rc, err = embed([url("in")], url("out-changed"), "--resume")
    finally:
        s3.fs.pipe_file(f"{BUCKET}/in/c01.png", original)
    assert rc == 1
    assert "input #1 's3://facepcl-test/in/c01.png' changed after the run being resumed embedded it" in err


def test_a_video_object_gives_the_rows_of_the_local_file(s3, embed, tmp_path) -> None:
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    rng = np.random.default_rng(3)
    for _ in range(4):
        writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    writer.release()
    s3.fs.put_file(str(video), f"{BUCKET}/video/clip.avi")
    rc, err = embed([video], tmp_path / "local", "--no-track")
    assert rc == 0, err
    rc, err = embed([url("video/clip.avi")], url("out-video"), "--no-track")
    assert rc == 0, err
    a, b = read_embeddings(url("out-video")), read_embeddings(tmp_path / "local")
    assert a.column("frame").to_pylist() == b.column("frame").to_pylist() == [0, 1, 2, 3]
    assert set(a.column("path").to_pylist()) == {url("video/clip.avi")}
    np.testing.assert_array_equal(column_to_numpy(a, "face"), column_to_numpy(b, "face"))


@pytest.mark.slow
def test_credentials_missing_is_one_clear_error_and_secrets_are_never_written(s3, embed, monkeypatch) -> None:
    secret = "s3cr3t-Never-Written-7f3a"
    options = json.dumps({"key": "testing", "secret": secret})
    rc, out = embed([url("in")], url("out-secret"), "--storage-options", options)
    assert rc == 0, out
    assert secret not in out
    for key in s3.keys("out-secret"):
        assert secret.encode() not in s3.fs.cat_file(f"{BUCKET}/out-secret/{key}"), key

    # bad JSON: the message does not repeat it
    with pytest.raises(SystemExit):
        main(["embed", url("in"), "-o", url("x"), "--storage-options", f'{{"secret": "{secret}"'])

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # fresh options: a filesystem that looks for credentials now
    rc, out = embed([url("in")], url("out-nocreds"), "--storage-options", json.dumps({"default_block_size": 1 << 22}))
    assert rc == 1
    assert secret not in out
    error = [line for line in out.splitlines() if "error" in line]
    assert len(error) == 1, out
    assert url("out-nocreds") in error[0]
    assert "AWS_ACCESS_KEY_ID" in error[0] and "--storage-options" in error[0]


def test_sequences_of_frames_are_local_only(capsys, tmp_path) -> None:
    assert main(["embed", url("frames"), "-o", str(tmp_path / "out"), "--sequences"]) == 1
    assert "--sequences reads folders of frames from local disk only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_killed_run_on_s3_resumes_to_exactly_the_same_rows(s3, reference, random_model_dir) -> None:
    out = url("out-killed")
    cmd = [sys.executable, "-m", "facepcl", "embed", url("in"), "-o", out, "--model", str(random_model_dir),
           *ARGS[:-3], "--shard-size", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len([k for k in s3.keys("out-killed") if k.startswith("_manifests/part-")]) < 3:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 0 < read_embeddings(out).num_rows < N_IMAGES
    assert any(".lock" in k for k in s3.keys("out-killed")), "kill -9 leaves the lock object behind"
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming rank 0" in resumed.stderr
    assert_same_rows(out, reference)
    table = read_embeddings(out)
    assert len(set(table.column("item").to_pylist())) == table.num_rows == N_IMAGES
    keys = s3.keys("out-killed")
    data = [k for k in keys if k.startswith("part-")]
    assert len(data) == len([k for k in keys if k.startswith("_manifests/part-")])  # no orphans left
    assert not [k for k in keys if ".lock" in k]


class _FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of the S3 server that answers 503 to chosen PUTs."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.split("://", 1)[1]
        self.pattern: re.Pattern | None = None
        self.left = 0
        self.failed = 0
        self.requests: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                proxy.requests.append(f"{self.command} {self.path}")
                body = self._body()
                if self.command == "PUT" and proxy._should_fail(self.path):
                    msg = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", resp.getheader("Content-Length") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, pattern: str | None, times: int = 0) -> None:
        """Answer 503 to the next ``times`` PUTs whose path matches ``pattern`` (None: to none)."""
        self.pattern = re.compile(pattern) if pattern else None
        self.left = times
        self.failed = 0

    def _should_fail(self, path: str) -> bool:
        if self.pattern is None or self.left <= 0 or not self.pattern.search(path.split("?")[0]):
            return False
        self.left -= 1
        self.failed += 1
        return True

    def __enter__(self) -> _FaultyProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

