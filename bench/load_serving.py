"""Load test of `mlflow models serve` on 127.0.0.1: concurrency levels, malformed requests mixed in.

A real server subprocess (`--env-manager local`, `-w` workers from `registry.serve_workers`)
answers client threads that each keep one HTTP connection and send requests back to back for
a fixed time per concurrency level. Every `bad_every`-th request is malformed (a different
kind each time); it must get a 400 and the server must keep its workers (same worker pids,
`/ping` answering) after all levels. Reported per level: p50/p99 latency of the good
requests, throughput, and errors (a good request not answered 200, or a malformed one not
answered 400). The clients run on the same machine as the server and share its cores.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 60

# Malformed requests: each must be refused with a 400, by MLflow's schema check or ours.
MALFORMED = {
    "k_out_of_range": {"dataframe_records": [{"history": ["x"], "k": 0}]},
    "no_history_column": {"dataframe_records": [{"items": ["x"]}]},
    "history_not_a_list": {"dataframe_records": [{"history": "x"}]},
    # (Not a string `explain`: the server's JSON parser casts it to a boolean, docs/registry.md.)
    "timestamps_not_numbers": {"dataframe_records": [{"history": ["x"], "timestamps": ["soon"]}]},
    "lengths_differ": {"dataframe_records": [{"history": ["x", "y"], "event_types": ["view"]}]},
    "not_json": "{this is not json",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(package: Path, workers: int, log_path: Path) -> tuple[subprocess.Popen, int]:
    """`mlflow models serve` in its own process group (uvicorn workers are its children)."""
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(package),
             "--env-manager", "local", "--host", HOST, "-p", str(port), "-w", str(workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited {proc.returncode}; see {log_path}")
        if ping(port):
            return proc, port
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"mlflow models serve not ready after {START_TIMEOUT_S}s; see {log_path}")


def ping(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        conn.request("GET", "/ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_pids(proc: subprocess.Popen) -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}


def _client(port: int, bodies: list[tuple[bytes, int]], offset: int, deadline: float,
            out: list) -> None:
    """Send bodies round-robin until the deadline; append (latency_ms, expected, got)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    i = offset
    while time.monotonic() < deadline:
        body, expected = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0  # connection lost: an error; reconnect
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        out.append(((time.perf_counter() - start) * 1e3, expected, status))
    conn.close()


def request_mix(good: dict, bad_every: int) -> list[tuple[bytes, int]]:
    """One cycle: good requests with each malformed kind after every `bad_every - 1` of them."""
    bodies = []
    for bad in MALFORMED.values():
        bodies += [(json.dumps(good).encode(), 200)] * (bad_every - 1)
        bodies.append((bad.encode() if isinstance(bad, str) else json.dumps(bad).encode(), 400))
    return bodies


def run_level(port: int, concurrency: int, duration_s: float, bodies) -> dict:
    results: list = []
    deadline = time.monotonic() + duration_s
    started = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(port, bodies, 7 * c, deadline, results))
               for c in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - started
    lat = np.array([r[0] for r in results if r[1] == 200 and r[2] == 200])
    bad = [r for r in results if r[1] == 400]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "ok_per_s": round(lat.size / elapsed_s, 1),
        "malformed": len(bad),
        "malformed_400": sum(r[2] == 400 for r in bad),
        "errors": sum(r[1] != r[2] for r in results),
    }


def load_test(package: Path, workers: int, good: dict, log_dir: Path, levels=(1, 8, 32),
              duration_s: float = 8.0, bad_every: int = 10) -> dict:
    """Start the server, run every level, check the workers survived, stop the server."""
    log_path = log_dir / "serve_load.log"
    proc, port = start_server(package, workers, log_path)
    try:
        pids_before = worker_pids(proc)
        bodies = request_mix(good, bad_every)
        rows = [run_level(port, c, duration_s, bodies) for c in levels]
        survived = proc.poll() is None and ping(port) and worker_pids(proc) == pids_before
    finally:
        stop_server(proc)
    return {
        "server": f"mlflow models serve --env-manager local -w {workers} (127.0.0.1)",
        "workers": workers,
        "seconds_per_level": duration_s,
        "malformed_share": round(1 / bad_every, 3),
        "malformed_kinds": sorted(MALFORMED),
        "levels": rows,
        "workers_survived": bool(survived),
    }
