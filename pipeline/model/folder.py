"""The model folder (`docs/interfaces.md`): `model.safetensors`, `config.json`,
`vocab.parquet`, `training.json` (and, when the data had them, `feature_vocab.parquet` and
`data_profile.parquet`). Loading never unpickles: safetensors for weights, JSON for
the config; every mismatch is a one-line `ModelError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.errors import ModelError
from pipeline.model.config import N_RESERVED, ModelConfig
from pipeline.model.transformer import SeqRecModel

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.parquet"
TRAINING_FILE = "training.json"
# What a later retrain needs from this model's data: the side-feature token names (a warm
# start maps feature rows by name) and the training data's profile (the drift reference).
CARRIED_FILES = ("feature_vocab.parquet", "data_profile.parquet")


def save_model_dir(
    model: SeqRecModel,
    out_dir: str | Path,
    vocab_path: str | Path,
    training: dict,
) -> Path:
    """Write the model folder: weights (safetensors), config, vocabulary copy, training info."""
    import shutil

    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    shutil.copyfile(vocab_path, out / VOCAB_FILE)
    for name in CARRIED_FILES:  # beside the vocabulary in the sequences folder, when present
        source = Path(vocab_path).parent / name
        if source.is_file():
            shutil.copyfile(source, out / name)
    (out / TRAINING_FILE).write_text(json.dumps(training, indent=2, default=str) + "\n")
    return out


def read_config(model_dir: str | Path) -> ModelConfig:
    """The `ModelConfig` in `model_dir/config.json`, or a one-line ModelError."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: model config not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: must be a JSON object")
    try:
        return ModelConfig.from_dict(raw, str(path))
    except TypeError as exc:
        raise ModelError(f"{path}: bad model config ({exc})") from None


def load_weights(model: SeqRecModel, weights_path: str | Path) -> SeqRecModel:
    """Load a safetensors state dict; missing/unexpected keys or shapes -> ModelError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights_path)
    if not path.is_file():
        raise ModelError(f"{path}: model weights not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match the config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ModelError(f"{path}: weight {name} has shape {tuple(tensor.shape)}, "
                             f"config expects {tuple(expected[name].shape)}")
    model.load_state_dict(state)
    return model


def load_model_dir(model_dir: str | Path):
    """Load a model folder -> (model in eval mode, ModelConfig, vocab DataFrame).

    Raises:
        ModelError: a file is missing or the weights, config and vocabulary disagree.
    """
    import pandas as pd

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: model folder not found")
    config = read_config(model_dir)
    vocab_path = model_dir / VOCAB_FILE
    if not vocab_path.is_file():
        raise ModelError(f"{vocab_path}: vocabulary not found")
    vocab = pd.read_parquet(vocab_path)
    if {"item_id", "index"} - set(vocab.columns):
        raise ModelError(f"{vocab_path}: needs columns item_id, index")
    vocab_size = int(vocab["index"].max()) + 1 if len(vocab) else N_RESERVED
    if vocab_size != config.vocab_size:
        raise ModelError(f"{vocab_path}: vocabulary has {vocab_size} tokens, "
                         f"{model_dir / CONFIG_FILE} says vocab_size={config.vocab_size}")
    model = load_weights(SeqRecModel(config), model_dir / WEIGHTS_FILE)
    return model.eval(), config, vocab
