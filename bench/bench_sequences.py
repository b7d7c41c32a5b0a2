"""Benchmark of `build_sequences`: wall time and peak RSS at several event counts.

    nice -n 10 python bench/bench_sequences.py                      # 1M and 10M events
    nice -n 10 python bench/bench_sequences.py --events 200000      # quick check

Each size runs in fresh subprocesses (so peak RSS is that size's own): one generates random
canonical events to a parquet file (not timed), one runs the stage's work on it (read,
build, Great Expectations suite, write) and one runs the baseline, a plain stable sort of
the same events by user and time. The ratio build/baseline is comparable across machines.
Writes JSON to bench/results/sequences.json. Target: <= 60 s and <= 4 GiB at 10M events
on 2 cores, memory linear in the number of events.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.common import machine, peak_rss_mib, write_result  # noqa: E402

DEFAULT_SIZES = (1_000_000, 10_000_000)
EVENTS_PER_USER = 20  # mean history length of the generated shoppers
EVENTS_PER_ITEM = 50
DAYS = 60
TYPE_SHARES = {"view": 0.85, "cart": 0.1, "purchase": 0.05}
TARGET_S, TARGET_GIB, TARGET_EVENTS = 60.0, 4.0, 10_000_000


def generate(n_events: int, path: Path, seed: int = 0) -> None:
    """Random canonical events: Zipf-popular items, uniform users and times, in file order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users = max(1, n_events // EVENTS_PER_USER)
    n_items = max(1, n_events // EVENTS_PER_ITEM)
    items = (rng.zipf(1.2, n_events) - 1) % n_items
    start_s = 1_700_000_000
    ts_s = start_s + rng.integers(0, DAYS * 86_400, n_events)
    types = rng.choice(list(TYPE_SHARES), size=n_events, p=list(TYPE_SHARES.values()))
    table = pa.table(
        {
            "user_id": pa.array(rng.integers(0, n_users, n_events)).cast(pa.string()),
            "item_id": pa.array(items).cast(pa.string()),
            "event_type": pa.array(types, pa.string()),
            "timestamp": pa.array(ts_s * 10**9, pa.timestamp("ns", tz="UTC")),
            "session_id": pa.nulls(n_events, pa.string()),
            "source_file": pa.array(["bench.csv"] * 1, pa.string()).take(
                pa.array(np.zeros(n_events, dtype=np.int64))
            ),
            "source_row": pa.array(np.arange(n_events, dtype=np.int64)),
        }
    )
    pq.write_table(table, path)


def run_build(path: Path, out: Path) -> dict:
    """The stage's work with default params, phase by phase."""
    from pipeline.params import Params
    from pipeline.sequences.build import build_sequences, write_outputs
    from pipeline.sequences.checks import check_sequences
    from pipeline.sequences.prep import read_events

    params = Params()
    phases = {}
    start = time.perf_counter()
    table = read_events(path)
    phases["read_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    build = build_sequences(table, params.sequences, params.data.event_types)
    del table
    phases["build_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    build.stats["checks"] = check_sequences(build.tables, build.meta)
    phases["checks_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    write_outputs(build, out, None)
    phases["write_s"] = time.perf_counter() - mark
    phases["total_s"] = time.perf_counter() - start
    phases["users"] = build.stats["users"]
    phases["events_kept"] = build.stats["events"]
    return phases


def run_baseline(path: Path) -> dict:
    """Read the same file and stably sort it by user and time (numpy lexsort)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    table = pq.read_table(path, columns=["user_id", "timestamp"])
    user = table.column("user_id").combine_chunks().dictionary_encode().indices.to_numpy()
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    order = np.lexsort((ts, user))
    assert len(order) == table.num_rows
    return {"total_s": time.perf_counter() - start}


def _worker(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if args.worker == "generate":
        generate(args.n, path)
        result = {}
    elif args.worker == "build":
        with tempfile.TemporaryDirectory() as out:
            result = run_build(path, Path(out))
    else:
        result = run_baseline(path)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def _spawn(kind: str, n: int, file: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GX_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--n", str(n),
               "--file", str(file)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker at {n} events failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--out", default=None, help="default bench/results/sequences.json")
    parser.add_argument(
        "--worker", choices=["generate", "build", "baseline"], help=argparse.SUPPRESS
    )
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    info = machine(("pyarrow", "great_expectations"))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.events:
            file = Path(tmp) / f"events_{n}.parquet"
            _spawn("generate", n, file)
            build = _spawn("build", n, file)
            baseline = _spawn("baseline", n, file)
            file.unlink()
            runs.append(
                {
                    "events": n,
                    "build": build,
                    "baseline_sort": baseline,
                    "ratio_vs_sort": build["total_s"] / baseline["total_s"],
                    "peak_rss_mib_per_million_events": build["peak_rss_mib"] / (n / 1e6),
                }
            )
            print(
                f"{n:>11,} events: build {build['total_s']:.2f} s "
                f"(read {build['read_s']:.2f}, build {build['build_s']:.2f}, "
                f"checks {build['checks_s']:.2f}, write {build['write_s']:.2f}), "
                f"peak {build['peak_rss_mib']:.0f} MiB; sort baseline "
                f"{baseline['total_s']:.2f} s, ratio {runs[-1]['ratio_vs_sort']:.1f}x",
                flush=True,
            )
    at_target = [r for r in runs if r["events"] == TARGET_EVENTS]
    report = {
        "machine": info,
        "target": {"events": TARGET_EVENTS, "max_s": TARGET_S, "max_gib": TARGET_GIB},
        "runs": runs,
        "target_met": None
        if not at_target
        else (
            at_target[0]["build"]["total_s"] <= TARGET_S
            and at_target[0]["build"]["peak_rss_mib"] <= TARGET_GIB * 1024
        ),
    }
    write_result("sequences", report, args.out)


if __name__ == "__main__":
    main()
