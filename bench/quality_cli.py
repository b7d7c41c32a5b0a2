"""`python -m bench quality`: options of the quality suite (bench/quality.py does the work)."""

from __future__ import annotations

import argparse
import json
import sys

from bench.common import RESULTS_DIR, command_line, write_result
from bench.quality import DEFAULT_TIMEOUT_S, BenchError, print_quality, run_quality


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench quality", description=__doc__)
    parser.add_argument("--dataset", required=True,
                        help="toys | sports | taobao | synthetic (bench/params/<dataset>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra override after the dataset's file (repeatable)")
    parser.add_argument("--tag", default="", help="suffix of the result name (a retry)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--keep", action="store_true", help="keep the workspace (bench/work/)")
    parser.add_argument("--show", action="store_true", help="print the last result, run nothing")
    args = parser.parse_args(argv)
    name = f"quality_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    if args.show:
        print_quality(json.loads((RESULTS_DIR / f"{name}.json").read_text()))
        return 0
    try:
        result = run_quality(args.dataset, args.set, args.timeout_s, args.keep, name)
    except BenchError as exc:
        print(f"bench quality: {exc}", file=sys.stderr)
        return 1
    result["command"] = command_line(["quality", *argv])
    write_result(name, result)
    return 0
