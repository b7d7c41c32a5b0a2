"""`python -m pipeline package`: write the finetuned model as an MLflow pyfunc folder.

    python -m pipeline package --model models/finetuned --sequences data/sequences \
        --out models/mlflow_model

The pyfunc is saved from code (`pipeline/serving/pyfunc.py`, no pickles) with the finetuned folder
and a popularity table (the cold-start fallback, from `train.parquet`) as artifacts, the
`pipeline` package as `code_paths` so it imports wherever the model is loaded, an explicit
signature, an input example and pinned pip requirements. A pure DVC stage: it writes the
folder and registers nothing (`python -m pipeline registry register` does that).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError
from pipeline.serving.variants import VARIANTS

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole `pipeline` package
SERVING_FILE = Path(__file__).resolve().with_name("pyfunc.py")
MODEL_FILES = ("model.safetensors", "config.json", "vocab.parquet")
# Installed distributions the pyfunc needs at load time, pinned to the versions it was built
# with. Listing them avoids MLflow's requirement inference, which re-loads the model in a
# subprocess (slow, and it guesses).
RUNTIME_DISTRIBUTIONS = (
    "mlflow",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "safetensors",
    "pydantic",
    "pyyaml",
)
EXAMPLE_HISTORY_LEN = 3
EXAMPLE_START_S, EXAMPLE_GAP_S = 1_767_225_600, 60  # 2026-01-01, a view a minute


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="finetuned model folder")
    parser.add_argument("--sequences", required=True, help="sequences folder (popularity, meta)")
    parser.add_argument("--out", required=True, help="MLflow model folder to write")
    parser.add_argument(
        "--variant", choices=VARIANTS, default=None,
        help="serving variant (default: registry.serve_variant); pipeline/serving/variants.py",
    )


def popularity_table(sequences_dir: Path, top_n: int) -> dict[str, Any]:
    """Most frequent training items (every vocabulary item ranks; unseen ones score 0).

    Returns:
        `{"item_ids": [...], "scores": [...], "purchase_rate": float, "events": int}` where
        scores are shares of training events and `purchase_rate` is the share of purchases
        among target events (NaN when the shop has no `purchase` type).
    """
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for name in ("train.parquet", "vocab.parquet", "meta.json"):
        if not (sequences_dir / name).is_file():
            raise ModelError(f"{sequences_dir / name}: missing (run build_sequences first)")
    meta = json.loads((sequences_dir / "meta.json").read_text())
    train = pq.read_table(sequences_dir / "train.parquet", columns=["items", "types"])
    vocab = pd.read_parquet(sequences_dir / "vocab.parquet")

    items = pc.list_flatten(train["items"]).to_numpy().astype(np.int64)
    types = pc.list_flatten(train["types"]).to_numpy().astype(np.int64)
    size = int(vocab["index"].max()) + 1
    counts = np.bincount(items, minlength=size)[vocab["index"].to_numpy()]
    # Stable sort: equal counts keep vocabulary order, so the table is deterministic.
    order = np.argsort(-counts, kind="stable")[:top_n]
    total = max(int(counts.sum()), 1)

    event_types = list(meta["event_types"])
    target_ids = [1 + event_types.index(t) for t in meta.get("target_event_types", [])]
    purchase_rate = float("nan")
    if "purchase" in event_types and target_ids:
        targets = np.isin(types, target_ids)
        purchase_id = 1 + event_types.index("purchase")
        purchase_rate = float((types[targets] == purchase_id).sum() / max(int(targets.sum()), 1))
    return {
        "item_ids": vocab["item_id"].astype(str).to_numpy()[order].tolist(),
        "scores": (counts[order] / total).tolist(),
        "purchase_rate": purchase_rate,
        "events": int(counts.sum()),
    }


def model_signature(default_k: int):
    """Explicit schema: `history` required; `event_types`, `timestamps`, `k`, `explain`
    optional; `explanations` only in answers to rows that ask (pipeline.serving.explain)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema(
        [
            ColSpec(Array(DataType.string), "history"),
            ColSpec(Array(DataType.string), "event_types", required=False),
            ColSpec(Array(DataType.long), "timestamps", required=False),
            ColSpec(DataType.long, "k", required=False),
            ColSpec(DataType.boolean, "explain", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(Array(DataType.string), "items"),
            ColSpec(Array(DataType.double), "scores"),
            ColSpec(DataType.double, "purchase_probability"),
            ColSpec(DataType.long, "unknown_items"),
            ColSpec(DataType.long, "unknown_event_types"),
            ColSpec(DataType.boolean, "fallback"),
            ColSpec(Array(_explanation_type()), "explanations", required=False),
        ]
    )
    params = ParamSchema([ParamSpec("k", DataType.long, default_k),
                          ParamSpec("explain", DataType.boolean, False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _explanation_type():
    """One recommended item's explanation: its id, reason and top history events."""
    from mlflow.types import DataType
    from mlflow.types.schema import Array, Object, Property

    event = Object([
        Property("item_id", DataType.string), Property("event_type", DataType.string),
        Property("timestamp", DataType.long, required=False), Property("weight", DataType.double),
        Property("position", DataType.long),
    ])
    return Object([Property("item_id", DataType.string), Property("reason", DataType.string),
                   Property("events", Array(event))])


def input_example(popular_items: list[str], event_types: list[str], default_k: int):
    """A two-row request: a returning user and a brand-new one (empty history), with the
    events' unix-second timestamps (models with time features need them)."""
    import pandas as pd

    history = popular_items[:EXAMPLE_HISTORY_LEN]
    types = [event_types[0]] * len(history)
    stamps = [EXAMPLE_START_S + EXAMPLE_GAP_S * i for i in range(len(history))]
    return pd.DataFrame({"history": [history, []], "event_types": [types, []],
                         "timestamps": [stamps, []], "k": [default_k, default_k]})


def _pip_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in RUNTIME_DISTRIBUTIONS]


def _prepare_out(out_dir: Path) -> None:
    """Remove a previous package at `out_dir`; refuse to delete anything else."""
    if not out_dir.exists():
        return
    if out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / "MLmodel").is_file()):
        shutil.rmtree(out_dir)
        return
    raise ModelError(f"{out_dir}: exists and is not an MLflow model folder; refusing to replace it")


def _drop_local_paths(model_path: Path, sources: dict[str, Path]) -> None:
    """Rewrite the absolute build paths MLflow records in `MLmodel` as relative ones.

    MLflow loads the code file by its base name and artifacts by their `path`; the `uri`
    entries are provenance only. Absolute paths of the build machine mean nothing elsewhere.
    """
    from mlflow.models import Model

    mlmodel = Model.load(str(model_path / "MLmodel"))
    pyfunc = mlmodel.flavors["python_function"]
    pyfunc["model_code_path"] = SERVING_FILE.name
    for name, artifact in pyfunc.get("artifacts", {}).items():
        source = sources.get(name)
        artifact["uri"] = source.as_posix() if source and not source.is_absolute() else name
    mlmodel.save(str(model_path / "MLmodel"))


def package_model(model_dir: Path, sequences_dir: Path, out_dir: Path, registry,
                  variant: str | None = None) -> Path:
    """Save the pyfunc folder at `out_dir` (replacing a previous package) and return it.

    Args:
        model_dir: finetuned model folder (docs/interfaces.md "Model folders").
        sequences_dir: sequences folder, for the popularity fallback.
        out_dir: where the MLflow model folder goes.
        registry: `RegistryParams` (k defaults, default event type, batch size, variant).
        variant: serving variant; None = `registry.serve_variant`.
    """
    import os

    import mlflow.pyfunc

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise ModelError(f"{model_dir / name}: missing; not a finetuned model folder")
    config = json.loads((model_dir / "config.json").read_text())
    popularity = popularity_table(sequences_dir, registry.max_k)
    _prepare_out(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        tmp_dir = Path(tmp)
        popularity_path = tmp_dir / "popularity.json"
        popularity_path.write_text(json.dumps(popularity))
        code_dir = tmp_dir / "code" / "pipeline"
        shutil.copytree(PACKAGE_DIR, code_dir, ignore=shutil.ignore_patterns("__pycache__"))
        staging = tmp_dir / "model"
        mlflow.pyfunc.save_model(
            path=str(staging),
            python_model=str(SERVING_FILE),
            artifacts={"model_dir": str(model_dir.resolve()), "popularity": str(popularity_path)},
            model_config={
                "default_k": registry.default_k,
                "max_k": registry.max_k,
                "default_event_type": registry.default_event_type,
                "batch_size": registry.serve_batch_size,
                "threads": registry.serve_threads,
                "variant": variant or registry.serve_variant,
            },
            code_paths=[str(code_dir)],
            signature=model_signature(registry.default_k),
            input_example=input_example(
                popularity["item_ids"], list(config["event_types"]), registry.default_k
            ),
            pip_requirements=_pip_requirements(),
            metadata={"seqrec_model_name": registry.model_name},
        )
        _drop_local_paths(staging, {"model_dir": model_dir, "popularity": sequences_dir})
        staging.rename(out_dir)
    return out_dir


def run(args: argparse.Namespace) -> int:
    from pipeline.params import load_params

    params = load_params(args.params)
    variant = args.variant or params.registry.serve_variant
    out = package_model(Path(args.model), Path(args.sequences), Path(args.out), params.registry,
                        variant)
    print(f"package: {args.model} -> {out} (MLflow pyfunc, {variant}, "
          f"model name {params.registry.model_name})")
    return 0
