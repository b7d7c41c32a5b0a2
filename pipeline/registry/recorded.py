"""A registered version read back: its tags and the lineage files stored with its model.

`reproduce` and `registry diff` start here. A version is named as MLflow names it
(`models:/seqrec/7`, `models:/seqrec@champion`) or, for the configured model, just `7`,
`v7` or `@champion`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import RegistryError
from pipeline.registry import lineage, provenance

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))/?$")
SHORT_REF = re.compile(r"^(?:v?(?P<version>\d+)|@(?P<alias>[\w.-]+))$")


@dataclass
class RecordedVersion:
    """One registered version: name, number, tags and its downloaded `lineage/` folder."""

    name: str
    version: str
    tags: dict[str, str]
    run_id: str | None
    source: str
    lineage_dir: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def file(self, rel: str) -> Path | None:
        if self.lineage_dir is None:
            return None
        path = self.lineage_dir / rel
        return path if path.is_file() else None

    def params(self) -> dict[str, Any] | None:
        path = self.file(provenance.PARAMS_FILE)
        return yaml.safe_load(path.read_text()) if path else None

    def evaluation(self) -> dict[str, Any] | None:
        path = self.file(provenance.EVAL_FILE)
        return json.loads(path.read_text()) if path else None

    def gate_report(self) -> dict[str, Any] | None:
        path = self.file(provenance.GATE_FILE)
        return json.loads(path.read_text()) if path else None

    @property
    def git_sha(self) -> str | None:
        return self.tags.get(lineage.TAG_GIT_SHA)

    @property
    def dirty(self) -> bool:
        return (
            self.tags.get(lineage.TAG_GIT_DIRTY) == "true"
            or self.tags.get(lineage.TAG_DIRTY_ALLOWED) == "true"
        )


def parse_ref(ref: str, default_name: str) -> tuple[str, str | None, str | None]:
    """(model name, version or None, alias or None) from a version reference."""
    match = MODELS_URI.match(ref.strip()) or SHORT_REF.match(ref.strip())
    if match is None:
        raise RegistryError(
            f"{ref!r}: not a model version; use models:/{default_name}/<version>, "
            f"models:/{default_name}@<alias>, <version> or @<alias>"
        )
    parts = match.groupdict()
    return parts.get("name") or default_name, parts["version"], parts["alias"]


def resolve(client, ref: str, default_name: str) -> RecordedVersion:
    """The registered version `ref` names (tags only; see `fetch_lineage`)."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_ref(ref, default_name)
    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as exc:
        what = f"version {version}" if version is not None else f"alias @{alias}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RegistryError(f"{name}: no {what} in the registry ({first})") from None
    return RecordedVersion(
        name=name,
        version=str(found.version),
        tags=dict(found.tags),
        run_id=found.run_id,
        source=str(found.source),
    )


def fetch_lineage(recorded: RecordedVersion, tracking_uri: str, registry_uri: str,
                  dest: Path) -> Path | None:
    """Download the version's `lineage/` folder into `dest`; None when it has none.

    Versions registered before lineage files existed have none: they can be compared by their
    tags only, and cannot be rebuilt.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{recorded.name}/{recorded.version}/{provenance.LINEAGE_DIR}",
            dst_path=str(dest),
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
        )
    except (MlflowException, OSError):
        return None
    folder = Path(local)
    if not (folder / provenance.PARAMS_FILE).is_file():
        return None
    recorded.lineage_dir = folder
    return folder
