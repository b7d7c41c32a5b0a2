"""A journey that fails still stops its servers and its browser (nothing keeps a port)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.journey
FAILING = Path(__file__).with_name("failing_journey.py")


def still_running(pid: int, created: float) -> list[str] | None:
    """The command line of the recorded process if it still runs (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
            return process.cmdline()
    except psutil.NoSuchProcess:
        pass
    return None


def test_servers_and_browser_stop_when_a_journey_fails(tmp_path):
    record = tmp_path / "record.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(FAILING),
         "--basetemp", str(tmp_path / "inner")],
        cwd=REPO_ROOT, env={**os.environ, "SEQREC_STACK_RECORD": str(record)},
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deliberate failure with the servers and the browser running" in proc.stdout
    seen = json.loads(record.read_text())
    assert len(seen["processes"]) >= 6, seen  # standalone's parts, MLflow, Chromium
    left = [cmd for pid, created in seen["processes"] if (cmd := still_running(pid, created))]
    assert left == [], f"still running after the failed journey: {left}"
    for port in seen["ports"]:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
