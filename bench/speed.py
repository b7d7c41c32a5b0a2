"""`python -m bench speed --events N [N ...]`: generate, ingest, validate and build_sequences.

Runs the four data-stage suites one after another at the same sizes (each measures in fresh
subprocesses, with its own baseline), so the scaling plot in docs/benchmarks.md compares
like with like. Check `uptime` first: on a saturated machine the wall times mean little.
"""

from __future__ import annotations

import argparse

from bench import bench_sequences, bench_synthetic, bench_validate, ingest_bench

DEFAULT_EVENTS = ("1000000", "10000000")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench speed", description=__doc__)
    parser.add_argument("--events", nargs="+", default=list(DEFAULT_EVENTS))
    args = parser.parse_args(argv)
    sizes = ["--events", *args.events]
    for suite in (bench_synthetic, ingest_bench, bench_validate, bench_sequences):
        print(f"\n== {suite.__name__} {' '.join(sizes)}", flush=True)
        suite.main(sizes)
    return 0
