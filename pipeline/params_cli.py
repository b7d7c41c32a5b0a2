"""`python -m pipeline params [--schema]`."""

from __future__ import annotations

import argparse
import json

from pipeline.params import load_params, params_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", action="store_true", help="print the JSON schema instead")


def run(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(params_schema(), indent=2))
    else:
        print(json.dumps(load_params(args.params).model_dump(mode="json", by_alias=True), indent=2))
    return 0
