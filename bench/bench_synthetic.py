"""Benchmark the synthetic shop: generation time and peak memory by number of events.

    python bench/bench_synthetic.py --events 1000000 10000000

Each size runs in a fresh subprocess (so `ru_maxrss` is that run's own peak), once for the
generator and once for a baseline that builds a table of the same number of rows and the same
columns from plain numpy random data (ids as strings, timestamps, prices): the ratio says what
the simulation costs over merely materialising a table that size. Seconds per million events
across sizes shows how it scales. Writes a table to stdout and JSON (with the machine's
description) to bench/results/synthetic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.common import machine, peak_rss_mib, write_result  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "synthetic.json"
EVENT_TYPES = ["view", "cart", "purchase"]
ITEMS_PER_EVENTS = 100  # catalogue grows with the data: one item per 100 events
WORKER_TIMEOUT_S = 1800


def _scaled_size(n_events: int) -> tuple[int, int]:
    """(users, items) that give about `n_events` events with the other params at default."""
    from pipeline.ingest.synthetic import generate_events
    from pipeline.params import SyntheticParams

    default = SyntheticParams()
    calibration, _ = generate_events(default, EVENT_TYPES)
    events_per_user = len(calibration) / default.n_users
    return max(1, round(n_events / events_per_user)), max(
        default.n_items, n_events // ITEMS_PER_EVENTS
    )


def _run_generator(n_users: int, n_items: int) -> dict:
    from pipeline.ingest.synthetic import generate_events
    from pipeline.params import SyntheticParams

    params = SyntheticParams(n_users=n_users, n_items=n_items)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    events, _ = generate_events(params, EVENT_TYPES)
    seconds = time.perf_counter() - start
    return {
        "events": len(events),
        "users": n_users,
        "items": n_items,
        "seconds": seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "frame_mib": events.memory_usage(deep=True).sum() / 2**20,
    }


def _run_baseline(n_events: int) -> dict:
    """The same columns from plain random numbers: the cost of just building the table."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from pipeline.ingest.synthetic_catalog import padded_ids

    rss_before = peak_rss_mib()
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    n_users, n_items = max(1, n_events // 60), max(2000, n_events // ITEMS_PER_EVENTS)
    n_sessions = max(1, n_events // 6)
    user = np.sort(rng.integers(0, n_users, n_events))
    item = rng.integers(0, n_items, n_events)
    time_ms = 1_780_000_000_000 + rng.integers(0, 60 * 86_400_000, n_events)
    table = pa.table(
        {
            "user_id": padded_ids("u", n_users).take(user),
            "item_id": padded_ids("i", n_items).take(item),
            "event_type": pa.array(EVENT_TYPES).take(rng.integers(0, 3, n_events)),
            "timestamp": pa.array(pd.to_datetime(time_ms, unit="ms", utc=True).as_unit("ns")),
            "session_id": padded_ids("s", n_sessions).take(
                np.sort(rng.integers(0, n_sessions, n_events))
            ),
            "source_file": pa.repeat(pa.scalar("synthetic"), n_events),
            "source_row": np.arange(n_events, dtype=np.int64),
            "price": rng.random(n_events) * 100,
            "category": pa.array([f"c{j}" for j in range(24)]).take(item % 24),
        }
    )
    frame = table.to_pandas()
    seconds = time.perf_counter() - start
    return {
        "events": len(frame),
        "seconds": seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


def _in_subprocess(kind: str, *sizes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
         "--events", *map(str, sizes)],
        env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker for {sizes} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", choices=["generator", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # internal: one measurement in this fresh process, JSON on stdout
        run = _run_generator if args.worker == "generator" else _run_baseline
        print(json.dumps(run(*args.events)))
        return 0

    info = machine(("pyarrow",))
    rows = []
    for n_events in sorted(args.events):
        generator = _in_subprocess("generator", *_scaled_size(n_events))
        baseline = _in_subprocess("baseline", generator["events"])
        rows.append({"requested_events": n_events, "generator": generator, "baseline": baseline})
    first = rows[0]["generator"]
    per_million_first = first["seconds"] / (first["events"] / 1e6)
    header = (f"{'events':>11} {'users':>8} {'gen s':>8} {'s/1M ev':>8} {'scaling':>8} "
              f"{'peak MiB':>9} {'base s':>8} {'gen/base':>9} {'base MiB':>9}")  # fmt: skip
    print(header)
    for row in rows:
        gen, base = row["generator"], row["baseline"]
        row["seconds_per_million_events"] = gen["seconds"] / (gen["events"] / 1e6)
        row["scaling_vs_smallest"] = row["seconds_per_million_events"] / per_million_first
        row["time_ratio_vs_baseline"] = gen["seconds"] / base["seconds"]
        print(f"{gen['events']:>11,} {gen['users']:>8,} {gen['seconds']:>8.2f} "
              f"{row['seconds_per_million_events']:>8.2f} {row['scaling_vs_smallest']:>8.2f} "
              f"{gen['peak_rss_mib']:>9.0f} {base['seconds']:>8.2f} "
              f"{row['time_ratio_vs_baseline']:>9.2f} {base['peak_rss_mib']:>9.0f}")  # fmt: skip
    result = {
        "benchmark": "synthetic.generate_events",
        "machine": info,
        "notes": "each run in a fresh subprocess; peak_rss_mib = ru_maxrss of that process "
        "(includes imports, see rss_before_mib); baseline = same rows and columns from plain "
        "numpy random data; scaling_vs_smallest = seconds per million events / smallest size's",
        "sizes": rows,
    }
    write_result("synthetic", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
