"""`python -m bench <suite> [options]`: run one benchmark suite (`-h` lists the suites)."""

from __future__ import annotations

import importlib
import sys

# suite name -> (module, one-line description)
SUITES = {
    "generate": ("bench.bench_synthetic", "synthetic shop: time and peak RSS vs events"),
    "ingest": ("bench.ingest_bench", "CSV ingest: time and peak RSS vs events"),
    "validate": ("bench.bench_validate", "validate stage (GX included): time and peak RSS"),
    "sequences": ("bench.bench_sequences", "build_sequences: time and peak RSS vs events"),
    "speed": ("bench.speed", "the four above at the same sizes (--events)"),
    "training": ("bench.bench_training", "training throughput: Lightning vs a bare loop"),
    "eval": ("bench.bench_eval", "full-ranking evaluation throughput"),
    "serving": ("bench.bench_serving", "pyfunc serving latency"),
    "repro": ("bench.repro_noop", "time of a `dvc repro` with nothing changed"),
    "backtest": ("bench.backtest", "retraining policies replayed on a drifting shop's weeks"),
    "quality": ("bench.quality_cli", "real pipeline on a dataset: ours vs baselines/published"),
    "report": ("bench.report", "docs/benchmarks.md (+ docs/img) from bench/results/*.json"),
}


def usage() -> str:
    lines = ["usage: python -m bench <suite> [options]   (python -m bench <suite> -h for options)",
             "", "suites:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in SUITES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUITES:
        print(f"python -m bench: unknown suite {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUITES[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
