"""`python -m pipeline <command>`: one entry point for every stage and tool.

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Only the chosen command's module is imported, so `--help` is instant and no stage pays
for another's imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from pipeline.errors import EXIT_RETRY, SeqrecError, ServiceUnavailableError, is_unreachable

# name -> (module, one-line help). Order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("pipeline.params_cli", "print the resolved params, or their JSON schema"),
    "ingest": ("pipeline.ingest.stage", "read the configured source into canonical events"),
    "validate": (
        "pipeline.validation.validate",
        "Great Expectations checks, quarantine and batch gates",
    ),
    "build-sequences": ("pipeline.sequences.build", "per-user sequences, vocabulary and splits"),
    "drift": ("pipeline.drift.report", "new snapshot against the champion's training data"),
    "pretrain": ("pipeline.model.pretrain", "self-supervised next-event pretraining"),
    "finetune": ("pipeline.model.finetune", "fine-tune on cart/purchase targets (Lightning)"),
    "evaluate": (
        "pipeline.evaluation.evaluate",
        "full-ranking metrics, baselines, slices and report",
    ),
    "package": ("pipeline.serving.package", "write the MLflow pyfunc model"),
    "registry": ("pipeline.registry.cli", "register, approve, promote, roll back models in MLflow"),
    "reproduce": (
        "pipeline.registry.reproduce",
        "rebuild a registered version from its lineage and compare its metrics",
    ),
    "score": ("pipeline.serving.score", "batch-score users with a packaged or registered model"),
    "data": ("pipeline.ingest.datasets", "download public datasets (needs internet)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="seqrec pipeline stages and tools.",
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


# Libraries that narrate at INFO (device lists, tips, temp folders) drown the stage's own
# one-line summary; their warnings and errors still show, and `-v` shows everything.
NOISY_LIBRARIES = ("great_expectations", "alembic", "mlflow", "pytorch_lightning", "lightning")


class _LibraryInfoFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(NOISY_LIBRARIES)


def quiet_libraries() -> None:
    """Drop libraries' INFO lines: on the root handlers (where Lightning and GX propagate,
    whatever level they set themselves) and through MLflow's own handler's env setting."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_LibraryInfoFilter())


def _chosen_command(argv: list[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_chosen_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        quiet_libraries()
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except SeqrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RETRY if isinstance(exc, ServiceUnavailableError) else 1
    except Exception as exc:  # a server down mid-call: one line and the retry exit code
        if not is_unreachable(exc):
            raise
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        print(f"error: a server did not answer (retry later): {first_line}", file=sys.stderr)
        return EXIT_RETRY
