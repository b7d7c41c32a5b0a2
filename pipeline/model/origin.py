"""Where a model folder's weights came from: `origin.json` and `training.json`'s `init_from`.

Light (no torch), so the drift stage and the DAG's tasks can name a model without loading it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.errors import ModelError

ORIGIN_FILE = "origin.json"  # written beside a downloaded model: which registered version it is
TRAINING_FILE = "training.json"
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # models:/, runs:/, s3://...; not C:/ nor a path


def is_uri(spec: str) -> bool:
    """A model URI to download (resolved through MLflow), not a local folder."""
    return bool(URI.match(spec))


def origin_of(source_dir: Path) -> str:
    """What the folder is: the registered URI in `origin.json` when there is one."""
    path = source_dir / ORIGIN_FILE
    if path.is_file():
        try:
            uri = json.loads(path.read_text()).get("uri")
        except (json.JSONDecodeError, AttributeError):
            raise ModelError(f"{path}: not a JSON object with a `uri`") from None
        if uri:
            return str(uri)
    return str(source_dir)


def inherited_origin(pretrained: str | None, remote: bool) -> dict:
    """`init_from` of a pretrained folder's `training.json`, carried into fine-tuning's."""
    if pretrained is None or remote:
        return {}
    path = Path(pretrained) / TRAINING_FILE
    try:
        origin = json.loads(path.read_text()).get("init_from")
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return {"init_from": origin} if origin else {}
