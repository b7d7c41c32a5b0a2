"""`python -m bench quality`: options of the quality suite (bench/quality.py does the work)."""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import RESULTS_DIR, command_line, write_result
from bench.quality import (
    DEFAULT_TIMEOUT_S,
    WORK_DIR,
    BenchError,
    collect,
    print_quality,
    run_quality,
    seed_row,
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__)
    parser.add_argument("--dataset", required=True,
                        help="toys | sports (bench/params/amazon.yaml) | diginetica | "
                             "yoochoose (bench/params/sessions.yaml) | taobao | synthetic "
                             "(bench/params/<dataset>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra override after the dataset's file (repeatable)")
    parser.add_argument("--tag", default="", help="suffix of the result name (a retry)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--keep", action="store_true", help="keep the workspace (bench/work/)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train with this many seeds (trainer.seed, +1, ...): mean and std "
                             "of every recommender; the first seed's run is the detailed one")
    parser.add_argument("--show", action="store_true", help="print the last result, run nothing")
    parser.add_argument("--recollect", action="store_true",
                        help="re-read a kept workspace into the last result (stage times and "
                             "command stay those of the run), run nothing")
    args = parser.parse_args(argv)
    name = f"quality_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    if args.show or args.recollect:
        path = RESULTS_DIR / f"{name}.json"
        result = json.loads(path.read_text())
        if args.recollect:
            result.update(collect(WORK_DIR / name, args.dataset))
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print_quality(result)
        return 0
    try:
        result = run_quality(args.dataset, args.set, args.timeout_s, args.keep, name)
        if args.seeds > 1:
            first = int(result["params"]["trainer"]["seed"])
            result["seeds"] = [seed_row(first, result["eval"])]
            for seed in range(first + 1, first + args.seeds):
                extra = run_quality(args.dataset, [*args.set, f"trainer.seed={seed}"],
                                    args.timeout_s, False, f"{name}_seed{seed}")
                result["seeds"].append(seed_row(seed, extra["eval"]))
            print_quality(result)
    except BenchError as exc:
        print(f"bench quality: {exc}", file=sys.stderr)
        return 1
    result["command"] = command_line(["quality", *argv])
    write_result(name, result)
    return 0
