"""Serving variants of one finetuned model: `fp32` as trained, `int8` dynamic quantization,
or `compiled` (`torch.compile` of the scoring call).

`package --variant` (default `registry.serve_variant`) records the variant in the pyfunc's
`model_config`; the weights stay the fp32 safetensors file either way, and the pyfunc
quantizes when it loads (packed int8 weights have no safetensors form, and no pickles are
loaded). Registration copies the variant into the version tag `seqrec.serving_variant`.

`int8`: `torch.ao.quantization.quantize_dynamic` over the `nn.Linear` layers of the heads
(query block, repeat scorer, explore gate, purchase head): int8 weights, activations
quantized per call. The linear layers inside torch's `TransformerEncoderLayer` stay fp32:
its fused inference path reads their `.weight` as plain tensors and fails on packed ones.

`compiled`: `torch.compile(model.score_last, dynamic=True)` (Inductor: fused CPU kernels, the
same fp32 weights and numbers). It needs a C++ compiler where the model is served, and each
process compiles when it loads (`WARMUP_SHAPES`, so the first request does not wait; other
shapes with a batch or history of one compile once more when first seen). Inductor's cache
(`TORCHINDUCTOR_CACHE_DIR`, default under /tmp) makes later starts on the same machine faster.

Which variant to serve is decided by measurement (`python -m bench serving`,
docs/benchmarks.md): speed for one user and for 1,000, size, NDCG@10 on the test split.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

VARIANTS = ("fp32", "int8", "compiled")
# (users, events) compiled at load: one user and several, histories of a few events.
WARMUP_SHAPES = ((1, 3), (2, 3))
DEFAULT_VARIANT = "fp32"
VARIANT_TAG = "seqrec.serving_variant"


def compress(model, variant: str):
    """The model to serve for `variant` (the same object for fp32)."""
    if variant not in VARIANTS:
        raise ValueError(f"serving variant {variant!r} is not one of {list(VARIANTS)}")
    if variant == "fp32":
        return model
    if variant == "compiled":
        return _compiled(model.eval())
    import torch
    from torch import nn

    encoder_linears = {
        f"{name}.{child}"
        for name, module in model.named_modules()
        if isinstance(module, nn.TransformerEncoderLayer)
        for child, sub in module.named_modules() if isinstance(sub, nn.Linear)
    }
    heads = {name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name not in encoder_linears}
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao (not a dependency).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(model.eval(), heads, dtype=torch.qint8)


def _compiled(model):
    """`model` whose `score_last` is compiled, and compiled once per `WARMUP_SHAPES` entry."""
    import torch

    from pipeline.model.config import N_RESERVED

    model.score_last = torch.compile(model.score_last, dynamic=True)
    for users, events in WARMUP_SHAPES:
        items = torch.full((users, events), N_RESERVED, dtype=torch.long)
        ts = torch.arange(events, dtype=torch.long).expand(users, events)
        model.score_last(items, torch.ones_like(items), ts)
    return model


def model_bytes(model) -> int:
    """Size of the model's state (weights, packed int8 ones included) as torch serializes it."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def package_variant(package_dir: Path) -> str:
    """The variant a packaged pyfunc folder serves (`fp32` for packages from before variants)."""
    import yaml

    mlmodel = yaml.safe_load((Path(package_dir) / "MLmodel").read_text())
    # MLflow keeps the pyfunc's `model_config` under the flavor's key `config`.
    config = mlmodel.get("flavors", {}).get("python_function", {}).get("config") or {}
    return str(config.get("variant", DEFAULT_VARIANT))
