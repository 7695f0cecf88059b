"""``facepcl serve`` under load on 127.0.0.1: latency percentiles, throughput and the server's peak memory.

A real server (``python -m facepcl serve``, the bundled pcl-demo model, its
defaults) is started in a child process; ``--requests`` POST /embed calls of
the sample photos (real photos with 0 to 5 faces) are sent from
``--clients`` threads at a time (bounded concurrency, loopback only), after
a warm-up. Reported: p50/p95/max latency per request, requests and faces
per second, and the server's peak resident memory (VmHWM).

Usage::

    python benchmarks/serve.py --requests 60 --clients 4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import _bench


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(requests: int = 60, clients: int = 4, concurrency: int = 1) -> dict[str, Any]:
    import httpx
    from end_to_end import photo_paths

    photos = [open(p, "rb").read() for p in photo_paths(1)]  # noqa: SIM115
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "facepcl", "serve", "--port", str(port), "--device", "cpu",
                               "--concurrency", str(concurrency), "--queue-timeout", "600"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("facepcl serve did not start") from None
                time.sleep(0.2)

        def call(i: int) -> tuple[float, int]:
            t = time.perf_counter()
            r = httpx.post(f"{url}/embed", files={"file": ("photo", photos[i % len(photos)])}, timeout=600)
            r.raise_for_status()
            return time.perf_counter() - t, len(r.json()["faces"])

        for i in range(len(photos)):  # warm-up: detector export, allocator
            call(i)
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(call, range(requests)))
        wall = time.perf_counter() - start
        peak = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    lat = sorted(d for d, _ in done)
    return {"requests": requests, "clients": clients, "concurrency": concurrency, "wall_s": wall,
            "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * lat[max(0, int(0.95 * len(lat)) - 1)],
            "max_ms": 1000 * lat[-1], "requests_per_s": requests / wall,
            "faces_per_s": sum(n for _, n in done) / wall, "peak_rss_mb": peak, "machine": _bench.machine()}


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = [[r["requests"], r["clients"], r["concurrency"], r["p50_ms"], r["p95_ms"], r["max_ms"],
             r["requests_per_s"], r["faces_per_s"], r["peak_rss_mb"]]]
    return _bench.table(["requests", "clients", "server concurrency", "p50 ms", "p95 ms", "max ms", "requests/s",
                         "faces/s", "server peak MB"], rows) + (
        f"\n\n{m.get('cpu')} ({', '.join(m.get('cpu_flags') or [])}), {m['cpus']} cores; pcl-demo, default path; "
        "11 sample photos (0-5 faces) in turn.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=60, help="timed requests (default 60)")
    p.add_argument("--clients", type=int, default=4, help="requests in flight at a time (default 4)")
    p.add_argument("--concurrency", type=int, default=1, help="the server's --concurrency (default 1)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args()
    os.environ.pop("OMP_WAIT_POLICY", None)
    result = run(a.requests, a.clients, a.concurrency)
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
