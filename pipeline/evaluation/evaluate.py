"""`evaluate` stage: full-ranking metrics of the model, baselines and slices, plots, report.

    # the DVC stage: model, from-scratch ablation, baselines, slices, plots, report, MLflow
    python -m pipeline evaluate --model models/finetuned --scratch models/scratch \\
        --sequences data/sequences --details reports/eval.json --metrics metrics/eval.json \\
        --plots plots --report reports
    # quick: score one model (a folder or an MLflow URI) on the test split (the Airflow gate)
    python -m pipeline evaluate --model models:/seqrec@champion --sequences data/sequences \\
        --details out.json

Metric definitions and the tie rule: `pipeline.evaluation.metrics`; baselines:
`pipeline.evaluation.baselines`; slices: `pipeline.evaluation.slices`.
docs/evaluation.md explains how to read the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

log = logging.getLogger(__name__)

SCRATCH_NAME = "transformer_scratch"
MODEL_NAME = "model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model folder or MLflow URI (models:/seqrec@champion)"
    )
    parser.add_argument(
        "--sequences", required=True, type=Path, help="build_sequences output folder"
    )
    parser.add_argument(
        "--details", required=True, type=Path,
        help="the full evaluation JSON to write (every k, slice and baseline)",
    )
    parser.add_argument(
        "--metrics", type=Path, help="headline JSON for DVC metrics (test NDCG@report_k, AUC)"
    )
    parser.add_argument(
        "--scratch", help="the same transformer trained from scratch (the ablation)"
    )
    parser.add_argument("--plots", type=Path, help="folder for metrics_at_k.csv and png/")
    parser.add_argument("--report", type=Path, help="folder for eval.md and eval.html")
    parser.add_argument(
        "--training-logs",
        nargs="*",
        type=Path,
        default=[],
        help="per-epoch CSV logs (epoch, train_loss, val_ndcg@10, ...) to plot",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test", help="examples to rank")
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="rank the baselines too (implied by --report or --scratch)",
    )
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.add_argument("--drift", type=Path,
                        help="drift report (metrics/drift.json) shown as a report section")


@dataclass(frozen=True)
class SequenceData:
    """What evaluation reads from the sequences folder."""

    folder: Path
    meta: dict
    vocab: object  # pandas.DataFrame: item_id, index
    vocab_size: int
    event_types: list[str]
    max_len: int


def load_sequence_data(folder: Path) -> SequenceData:
    import pandas as pd

    meta_path, vocab_path = folder / "meta.json", folder / "vocab.parquet"
    for path in (meta_path, vocab_path):
        if not path.is_file():
            raise InputError(f"{path}: not found (run build_sequences first)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for key in ("event_types", "max_len"):
        if key not in meta:
            raise InputError(f"{meta_path}: key {key!r} missing")
    vocab = pd.read_parquet(vocab_path, columns=["item_id", "index"])
    vocab_size = int(vocab["index"].max()) + 1 if len(vocab) else 3
    return SequenceData(
        folder, meta, vocab, vocab_size, list(meta["event_types"]), int(meta["max_len"])
    )


def _known_event_log(data: SequenceData, train, train_users):
    """Train events plus the val/test histories: every event seen before some request."""
    import pyarrow.parquet as pq

    from pipeline.evaluation.baselines import history_events, known_events

    logs, keys = [train], [train_users]
    for name in ("val", "test"):
        path = data.folder / f"{name}.parquet"
        if path.is_file():
            logs.append(history_events(path, data.max_len))
            keys.append(
                pq.read_table(path, columns=["user_id"]).column(0).to_numpy(zero_copy_only=False)
            )
    return known_events(logs, keys)


def evaluate(
    model_spec: str,
    data: SequenceData,
    params,
    *,
    split: str = "test",
    scratch_spec: str | None = None,
    with_baselines: bool = True,
    work_dir: Path,
) -> tuple[dict, dict]:
    """Rank the split with every recommender; returns (eval.json document, run details)."""
    import numpy as np

    from pipeline.evaluation.baselines import build_baselines, load_train_events
    from pipeline.evaluation.model_scorer import ModelRecommender, resolve_model_dir
    from pipeline.evaluation.ranking import load_examples, rank_examples
    from pipeline.evaluation.slices import assemble, head_items, slice_masks

    cfg = params.evaluate
    examples = load_examples(data.folder / f"{split}.parquet", data.max_len)
    if len(examples) == 0:
        raise InputError(f"{data.folder / f'{split}.parquet'}: no examples to evaluate")
    train, train_users = load_train_events(data.folder / "train.parquet")
    model_dir = resolve_model_dir(model_spec, work_dir / "model")
    recommenders = [ModelRecommender(MODEL_NAME, model_dir, data.vocab, data.event_types)]
    if scratch_spec:
        scratch_dir = resolve_model_dir(scratch_spec, work_dir / "scratch")
        recommenders.append(
            ModelRecommender(SCRATCH_NAME, scratch_dir, data.vocab, data.event_types)
        )
    if with_baselines:
        target_names = data.meta.get("target_event_types", params.sequences.target_event_types)
        target_types = [
            1 + data.event_types.index(n) for n in target_names if n in data.event_types
        ]
        recent_log = _known_event_log(data, train, train_users)
        recommenders += build_baselines(
            train, recent_log, data.vocab_size, target_types, cfg.recent_days
        )
    results = [
        rank_examples(
            rec,
            examples,
            data.vocab_size,
            batch_size=cfg.batch_size,
            exclude_history=cfg.exclude_history,
            coverage_k=cfg.report_k,
        )
        for rec in recommenders
    ]
    masks = slice_masks(
        examples,
        train_users=train_users[np.bincount(train.user, minlength=len(train_users)) > 0],
        head=head_items(train.items, data.vocab_size, cfg.head_item_share),
        event_types=data.event_types,
        short_history_max=cfg.short_history_max,
    )
    document = assemble(
        results[0],
        results[1:],
        examples,
        masks,
        ks=list(cfg.ks),
        report_k=cfg.report_k,
        vocab_size=data.vocab_size,
        event_types=data.event_types,
    )
    details = {
        "model_dir": str(model_dir),
        "split": split,
        "examples": len(examples),
        "vocab_size": data.vocab_size,
        "exclude_history": cfg.exclude_history,
        "seconds": {r.name: round(r.seconds, 3) for r in results},
        "unknown_items": recommenders[0].mapping.n_unknown,
    }
    return document, details


def mlflow_metric_name(*parts: str) -> str:
    """`model`, `ndcg@10` -> `model_ndcg_at_10` (MLflow rejects `@`)."""
    joined = "_".join(parts).replace("@", "_at_")
    return re.sub(r"[^0-9A-Za-z_.\-]", "_", joined)


def flatten_for_mlflow(document: dict) -> dict[str, float]:
    """Every number of eval.json under an MLflow-safe name."""
    flat: dict[str, float] = {}

    def walk(prefix: tuple[str, ...], node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk((*prefix, str(key)), value)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            flat[mlflow_metric_name(*prefix)] = float(node)

    walk((), document)
    return flat


def log_to_mlflow(
    document: dict, details: dict, params, params_path: str, files: list[Path]
) -> None:
    import mlflow

    from pipeline.tracking import stage_run

    with stage_run("evaluate", experiment=params.registry.experiment, params_path=params_path):
        mlflow.log_params({f"evaluate.{k}": v for k, v in params.evaluate.model_dump().items()})
        mlflow.log_params(
            {"evaluate.split": details["split"], "evaluate.examples": details["examples"]}
        )
        mlflow.log_metrics(flatten_for_mlflow(document))
        mlflow.log_dict(details, "evaluate/details.json")
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluate")


def run(args: argparse.Namespace) -> int:
    from pipeline.params import load_params

    params = load_params(args.params)
    data = load_sequence_data(args.sequences)
    full_stage = args.report is not None or args.scratch is not None
    with tempfile.TemporaryDirectory(prefix="seqrec-eval-") as tmp:
        document, details = evaluate(
            args.model,
            data,
            params,
            split=args.split,
            scratch_spec=args.scratch,
            with_baselines=args.baselines or full_stage,
            work_dir=Path(tmp),
        )
        if full_stage and args.split == "test":
            # The same recommenders on the validation split: if validation ranks them as
            # test does, checkpoints chosen on it are chosen well (docs/evaluation.md).
            val_document, _ = evaluate(args.model, data, params, split="val",
                                       scratch_spec=args.scratch, with_baselines=True,
                                       work_dir=Path(tmp) / "val")
            document["validation"] = validation_block(val_document, params.evaluate.report_k)
    if args.drift is not None:
        document["drift"] = json.loads(args.drift.read_text())
    if args.report is not None and Path(args.model).is_dir():
        from pipeline.evaluation.explained_users import explain_users

        details["explained_users"] = explain_users(Path(args.model), args.sequences,
                                                   params.registry, split=args.split)
    write_json(args.details, document)
    files = [args.details]
    if args.metrics is not None:
        write_json(args.metrics, headline(document, params.evaluate.report_k))
    if args.plots is not None or args.report is not None:
        from pipeline.evaluation.report import write_outputs

        files += write_outputs(
            document,
            details,
            plots_dir=args.plots,
            report_dir=args.report,
            training_logs=args.training_logs,
            report_k=params.evaluate.report_k,
        )
    if full_stage and not args.no_track:
        log_to_mlflow(document, details, params, args.params, files)
    print(summary_line(document, details, params.evaluate.report_k,
                       args.report / "eval.html" if args.report else args.details))
    return 0


def validation_block(val_document: dict, report_k: int) -> dict:
    """`{recommender: {"ndcg@k", "hr@k"}}` of the validation split, beside the test's."""
    keys = (f"ndcg@{report_k}", f"hr@{report_k}")
    blocks = {MODEL_NAME: val_document[MODEL_NAME], **val_document.get("baselines", {})}
    return {name: {key: block[key] for key in keys} for name, block in blocks.items()}


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def headline(document: dict, report_k: int) -> dict:
    """`metrics/eval.json` for `dvc metrics show|diff`: test NDCG@report_k of the model and of
    each baseline, and the purchase head's AUC; per-k and slice figures stay in the details."""
    key = f"ndcg@{report_k}"
    out = {MODEL_NAME: document[MODEL_NAME][key]}
    out.update({name: block[key] for name, block in document.get("baselines", {}).items()})
    auc = document[MODEL_NAME].get("purchase_auc")
    if auc is not None:
        out["purchase_auc"] = auc
    return out


def summary_line(document: dict, details: dict, report_k: int, where: Path) -> str:
    """`evaluate: test NDCG@10 model 0.7357, best other repeat_last 0.7740 (...) -> report`."""
    key = f"ndcg@{report_k}"
    text = f"evaluate: {details['split']} NDCG@{report_k} model {document[MODEL_NAME][key]:.4f}"
    others = {name: block[key] for name, block in document.get("baselines", {}).items()}
    if others:
        best = max(others, key=others.get)
        text += f", best other {best} {others[best]:.4f}"
    return f"{text} ({details['examples']} examples) -> {where}"
