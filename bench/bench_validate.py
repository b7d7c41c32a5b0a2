"""Throughput and peak memory of the `validate` stage on synthetic canonical events.

    python bench/bench_validate.py --events 1000000 10000000          # the real benchmark
    python bench/bench_validate.py --events 200000                    # quick check

For each size the bench generates random canonical events with numpy (about 1% of them
broken: null ids, unknown event types, future timestamps, exact duplicates), then runs, each
in a FRESH subprocess so peak RSS is that task's own:
  - `validate`: the real stage (`pipeline.validation.validate.run`), GX and Data Docs included;
  - `baseline`: a plain pandas read + write of the same parquet file.
Results (events/s, wall seconds, peak RSS, the stage's own timings, ratio to the baseline,
the machine) go to `bench/results/validate.json`. Target: 10M events <= 60 s on 2 cores
within 4 GiB.
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

RESULTS = REPO_ROOT / "bench" / "results" / "validate.json"
REFERENCE_TIME = "2026-11-01T00:00:00+00:00"
EVENTS_PER_USER = 50
EVENTS_PER_ITEM = 100
BROKEN_SHARE = 0.0025  # per kind of breakage (4 kinds: ~1% of rows quarantined)
DAYS = 90
SEED = 0


def generate(folder: Path, n_events: int) -> None:
    """Write ingest's outputs (events, empty quarantine, summary) for `n_events` events."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    n_broken = int(n_events * BROKEN_SHARE)
    n_clean = n_events - n_broken  # the duplicates are appended at the end
    n_users = max(n_events // EVENTS_PER_USER, 1)
    n_items = max(n_events // EVENTS_PER_ITEM, 1)

    def ids(prefix: str, n_distinct: int, size: int, null_rows=None) -> pa.Array:
        vocabulary = pa.array([f"{prefix}{i}" for i in range(n_distinct)])
        indices = pa.array(rng.integers(0, n_distinct, size), mask=null_rows)
        return pa.DictionaryArray.from_arrays(indices, vocabulary).cast(pa.string())

    broken = rng.choice(n_clean, size=3 * n_broken, replace=False).reshape(3, -1)
    null_user = np.zeros(n_clean, dtype=bool)
    null_user[broken[0]] = True
    type_codes = rng.choice(3, size=n_clean, p=[0.9, 0.07, 0.03]).astype(np.int8)
    type_codes[broken[1]] = 3  # "click": not in data.event_types
    end_ns = np.datetime64(REFERENCE_TIME.replace("+00:00", ""), "ns").astype(np.int64)
    ts_ns = end_ns - rng.integers(0, DAYS * 86_400 * 10**9, n_clean)
    ts_ns[broken[2]] = end_ns + 30 * 86_400 * 10**9  # a month in the future
    event_types = pa.DictionaryArray.from_arrays(
        pa.array(type_codes), pa.array(["view", "cart", "purchase", "click"])
    ).cast(pa.string())
    clean = pa.table({
        "user_id": ids("u", n_users, n_clean, null_rows=null_user),
        "item_id": ids("i", n_items, n_clean),
        "event_type": event_types,
        "timestamp": pa.array(ts_ns, pa.timestamp("ns", tz="UTC")),
        "session_id": pa.nulls(n_clean, pa.string()),
        "source_file": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n_clean, dtype=np.int8)), pa.array(["bench.csv"])
        ).cast(pa.string()),
        "source_row": pa.array(np.arange(n_clean, dtype=np.int64)),
        "price": pa.array(rng.uniform(1, 100, n_clean)),
    })
    copies = clean.take(pa.array(rng.choice(n_clean, size=n_broken, replace=False)))
    copies = copies.set_column(
        copies.schema.get_field_index("source_row"), "source_row",
        pa.array(np.arange(n_clean, n_events, dtype=np.int64)),
    )
    events = pa.concat_tables([clean, copies])
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(events, folder / "events.parquet")
    pq.write_table(pa.schema([("source_file", pa.string()), ("source_row", pa.int64()),
                              ("raw", pa.string()), ("rule", pa.string()),
                              ("detail", pa.string())]).empty_table(),
                   folder / "quarantine.parquet")
    (folder / "summary.json").write_text(json.dumps(
        {"rows_in": n_events, "rows_parsed": n_events, "rows_quarantined": 0, "by_rule": {}}))


def run_validate(work: Path) -> dict:
    from pipeline.validation import validate

    (work / "params.yaml").write_text(f'validate:\n  reference_time: "{REFERENCE_TIME}"\n')
    args = argparse.Namespace(
        params=str(work / "params.yaml"), interim=str(work / "interim"),
        out=str(work / "validated"), quarantine=str(work / "quarantine"),
        report=str(work / "report"), metrics=str(work / "metrics.json"), previous_summary=None,
    )
    validate.run(args)
    summary = json.loads((work / "report" / "summary.json").read_text())
    return {key: summary[key] for key in ("rows_in", "rows_valid", "rows_quarantined",
                                          "timings_s")}


def run_baseline(work: Path) -> dict:
    import pandas as pd

    events = pd.read_parquet(work / "interim" / "events.parquet")
    events.to_parquet(work / "baseline.parquet", index=False)
    return {"rows": len(events)}


def child(task: str, work: Path, cores: int | None) -> None:
    """One measured task in this (fresh) process; prints a JSON line."""
    if cores:
        os.sched_setaffinity(0, set(range(cores)))
    started = time.perf_counter()
    if task == "generate":
        extra = generate(work / "interim", int(os.environ["BENCH_EVENTS"])) or {}
    elif task == "validate":
        extra = run_validate(work)
    else:
        extra = run_baseline(work)
    wall_s = time.perf_counter() - started
    peak_mib = peak_rss_mib()
    print(json.dumps({"wall_s": round(wall_s, 3), "peak_rss_mib": round(peak_mib, 1), **extra}))


def measure(task: str, work: Path, n_events: int, cores: int | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--work", str(work)]
    if cores:
        command += ["--cores", str(cores)]
    env = {**os.environ, "BENCH_EVENTS": str(n_events), "GX_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{task} at {n_events} events failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--cores", type=int, default=None, help="pin each task to N cores")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["generate", "validate", "baseline"])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.work, args.cores)
        return
    info = machine(("pyarrow", "great_expectations"))
    runs = []
    for n_events in args.events:
        with tempfile.TemporaryDirectory(prefix="bench_validate_") as tmp:
            work = Path(tmp)
            generated = measure("generate", work, n_events, args.cores)
            baseline = measure("baseline", work, n_events, args.cores)
            result = measure("validate", work, n_events, args.cores)
        result["events_per_s"] = round(n_events / result["wall_s"])
        baseline["events_per_s"] = round(n_events / baseline["wall_s"])
        ratio = round(result["wall_s"] / baseline["wall_s"], 2)
        runs.append({"events": n_events, "generate": generated, "baseline": baseline,
                     "validate": result, "validate_over_baseline_wall": ratio})
        print(json.dumps(runs[-1]), flush=True)
    write_result("validate", {"machine": info, "cores_pinned": args.cores, "runs": runs},
                 args.out)


if __name__ == "__main__":
    main()
