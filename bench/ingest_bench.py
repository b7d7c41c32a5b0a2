"""Time the ingest of a generated CSV (the fast path) and of the same file with one bad line.

    python -m bench ingest --events 100000                   # quick check
    nice -n 10 python -m bench ingest --events 1000000 10000000  # the 10M-row target (< 60 s)

For each size, a CSV (about 60 bytes per event) is written to a temporary folder, then each
measurement runs in a FRESH subprocess (so peak RSS is its own):
  - `clean`: the real `pipeline.ingest.stage.ingest` on the file (pyarrow fast path);
  - `cut_last_line`: the same file with its last line cut mid-row (fast path for the head,
    line pass for the tail, the bad row quarantined);
  - `baseline`: a bare `pyarrow.csv.read_csv` of the clean file (parsing alone).
Ratios are ingest / baseline. Writes bench/results/ingest.json.
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

from bench.common import machine, peak_rss_mib, print_table, write_result  # noqa: E402

EVENT_NAMES = ("pv", "cart", "buy")
START_S = 1_700_000_000
SPAN_S = 90 * 86_400
EVENTS_PER_USER = 20
N_SKUS = 200_000
CUT_ROW = b"u1,i1,pv"  # an export cut mid-row
WORKER_TIMEOUT_S = 1800
WARMUP_ROWS = 200


def write_csv(path: Path, n_events: int, seed: int) -> None:
    """A header + `n_events` rows `visitor,sku,action,ts,price`, sorted by time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    names = np.array(EVENT_NAMES)
    table = pa.table(
        {
            "visitor": pa.array(rng.integers(0, n_events // EVENTS_PER_USER + 1, n_events)).cast(
                pa.string()),
            "sku": pa.array(rng.integers(0, N_SKUS, n_events)).cast(pa.string()),
            "action": pa.array(names[rng.integers(0, len(names), n_events)]),
            "ts": pa.array(np.sort(rng.integers(START_S, START_S + SPAN_S, n_events))),
            "price": pa.array(np.round(rng.uniform(1, 100, n_events), 2)),
        }
    )
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))


def time_ingest(path: Path) -> dict:
    """The real ingest of `path` with the column mapping of this CSV."""
    from pipeline.ingest.stage import ingest
    from pipeline.params import parse_params

    params = parse_params({"data": {
        "source": "csv", "path": str(path),
        "columns": {"visitor": "user_id", "sku": "item_id", "action": "event_type",
                    "ts": "timestamp"},
        "timestamp_unit": "s",
        "event_type_map": {"pv": "view", "cart": "cart", "buy": "purchase"},
    }})
    start = time.perf_counter()
    result = ingest(params.data, params.synthetic)
    return {"seconds": time.perf_counter() - start, "by_rule": result.summary["by_rule"]}


def time_baseline(path: Path) -> dict:
    """Parsing alone: pyarrow's multithreaded CSV reader on the same file."""
    import pyarrow.csv as pacsv

    start = time.perf_counter()
    table = pacsv.read_csv(path)
    return {"seconds": time.perf_counter() - start, "rows": table.num_rows}


def _warm_up(path: Path) -> None:
    """Ingest the file's first rows once: lazy imports and first-call costs are not timed."""
    head = path.with_name("warmup.csv")
    with path.open("rb") as source:
        head.write_bytes(b"".join(source.readline() for _ in range(WARMUP_ROWS)))
    time_ingest(head)
    head.unlink()


def _worker(kind: str, path: Path) -> None:
    if kind == "ingest":
        _warm_up(path)
    result = time_baseline(path) if kind == "baseline" else time_ingest(path)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def _spawn(kind: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GX_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--file", str(path)],
        env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ingest bench {kind} on {path} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/ingest.json")
    parser.add_argument("--worker", choices=["ingest", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.file)
        return 0
    info = machine(("pyarrow",))
    runs = []
    for n_events in args.events:
        with tempfile.TemporaryDirectory(prefix="bench_ingest_") as folder:
            path = Path(folder) / "events.csv"
            write_csv(path, n_events, args.seed)
            size_mb = path.stat().st_size / 1e6
            baseline = _spawn("baseline", path)
            clean = _spawn("ingest", path)
            with path.open("ab") as out:
                out.write(CUT_ROW)
            cut = _spawn("ingest", path)
        runs.append({
            "events": n_events, "csv_mb": round(size_mb, 1), "clean": clean,
            "cut_last_line": cut, "baseline_read_csv": baseline,
            "rows_per_s_clean": round(n_events / clean["seconds"]),
            "ratio_clean_vs_baseline": round(clean["seconds"] / baseline["seconds"], 2),
            "ratio_cut_vs_baseline": round(cut["seconds"] / baseline["seconds"], 2),
        })
    print_table(
        [{"events": r["events"], "ingest_s": r["clean"]["seconds"],
          "cut_line_s": r["cut_last_line"]["seconds"],
          "read_csv_s": r["baseline_read_csv"]["seconds"],
          "ratio": r["ratio_clean_vs_baseline"], "peak_MiB": r["clean"]["peak_rss_mib"]}
         for r in runs],
        ["events", "ingest_s", "cut_line_s", "read_csv_s", "ratio", "peak_MiB"],
        title="ingest of a generated CSV (ratio = ingest / pyarrow read_csv)")
    write_result("ingest", {"machine": info, "runs": runs}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
