"""Time the ingest of a generated CSV (the fast path) and of the same file with one bad line.

    python bench/ingest_bench.py --events 100000             # quick check
    nice -n 10 python bench/ingest_bench.py --events 10000000  # the 10M-row target (< 60 s)

Writes the CSV into a temporary folder (about 60 bytes per event) and prints seconds and
rows per second for: clean file (pyarrow fast path) and a file whose last line is cut
(fast path for the head, line pass for the tail).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.ingest import ingest
from pipeline.params import parse_params

EVENT_NAMES = np.array(["pv", "cart", "buy"])
START_S = 1_700_000_000
SPAN_S = 90 * 86_400


def write_csv(path: Path, n_events: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "visitor": pa.array(rng.integers(0, n_events // 20 + 1, n_events)).cast(pa.string()),
            "sku": pa.array(rng.integers(0, 200_000, n_events)).cast(pa.string()),
            "action": pa.array(EVENT_NAMES[rng.integers(0, 3, n_events)]),
            "ts": pa.array(np.sort(rng.integers(START_S, START_S + SPAN_S, n_events))),
            "price": pa.array(np.round(rng.uniform(1, 100, n_events), 2)),
        }
    )
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))


def time_ingest(path: Path) -> tuple[float, dict]:
    params = parse_params(
        {
            "data": {
                "source": "csv",
                "path": str(path),
                "columns": {
                    "visitor": "user_id",
                    "sku": "item_id",
                    "action": "event_type",
                    "ts": "timestamp",
                },
                "timestamp_unit": "s",
                "event_type_map": {"pv": "view", "cart": "cart", "buy": "purchase"},
            }
        }
    )
    start = time.perf_counter()
    result = ingest(params.data, params.synthetic)
    return time.perf_counter() - start, result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.csv"
        write_csv(path, args.events, args.seed)
        print(f"csv: {path.stat().st_size / 1e6:.1f} MB, {args.events} events")
        seconds, summary = time_ingest(path)
        print(f"clean: {seconds:.2f} s, {args.events / seconds:,.0f} rows/s, {summary['by_rule']}")
        with path.open("ab") as out:
            out.write(b"u1,i1,pv")  # an export cut mid-row
        seconds, summary = time_ingest(path)
        print(
            f"cut last line: {seconds:.2f} s, {args.events / seconds:,.0f} rows/s, "
            f"{summary['by_rule']}"
        )


if __name__ == "__main__":
    main()
