"""The person's decision on a registered challenger, and what follows from it: promotion,
or the rejection or expiry recorded in the registry.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.orchestration.champion import champion_version
from pipeline.orchestration.gate import read_json
from pipeline.orchestration.runtime import (
    APPROVAL_TAG,
    APPROVAL_TAGS,
    GATE_REPORT,
    PROMOTER,
    SECONDS_PER_HOUR,
    mlflow_client,
    pipeline_cli,
    record,
    task_env,
    workspace_params,
)
from pipeline.orchestration.workspace import run_command
from pipeline.registry.promotion import UNKNOWN_APPROVER

log = logging.getLogger(__name__)
VIA_TAG = "approval tag on the MLflow version page"
VIA_HAND_MOVE = "@champion moved by hand"


def poll_approval(project: Path, info: dict[str, Any], version: str) -> dict[str, Any] | None:
    """One poke: the person's decision on the version page, expiry, or None (keep waiting).

    Approval is the version tag `approval=approved|rejected`; moving `@champion` to the
    version by hand counts as approval. After `gate.approval_timeout_hours` from registration
    the decision is `expired`.
    """
    params = workspace_params(info)
    client = mlflow_client(project)
    name = params.registry.model_name
    mv = client.get_model_version(name, version)
    tags = {k: v for k, v in mv.tags.items() if k in APPROVAL_TAGS}
    decision = mv.tags.get(APPROVAL_TAG)
    if decision in ("approved", "rejected"):
        return {"decision": decision, "by": mv.tags.get("approved_by"), "via": VIA_TAG,
                "tags": tags}
    if champion_version(project, name) == version:
        return {"decision": "approved", "via": VIA_HAND_MOVE, "tags": tags}
    waited_h = (time.time() - mv.creation_timestamp / 1000) / SECONDS_PER_HOUR
    if waited_h >= params.gate.approval_timeout_hours:
        return {"decision": "expired", "tags": tags, "waited_hours": waited_h}
    log.info("version %s: no decision yet (%.3f h of %.3f h)", version, waited_h,
             params.gate.approval_timeout_hours)
    return None


def decided_by(approval: dict[str, Any]) -> str | None:
    """Who decided: the name the system knows (CLI `--by`, `approved_by` typed beside the tag,
    the Airflow user who answered), UNKNOWN_APPROVER for a decision made in the MLflow UI
    without a name, PROMOTER for auto-promotion, None for expiry."""
    if approval["decision"] == "auto":
        return PROMOTER
    if approval["decision"] not in ("approved", "rejected"):
        return None
    return approval.get("by") or UNKNOWN_APPROVER


def conclude(project: Path, info: dict[str, Any], version: str,
             approval: dict[str, Any]) -> dict[str, Any]:
    """Promote an approved challenger, or record the rejection or expiry; returns the outcome."""
    params = workspace_params(info)
    workspace = Path(info["workspace"])
    decision = approval["decision"]
    by = approval.get("by") or PROMOTER
    cli_timeout_s = params.airflow.task_timeout_minutes * 60
    env = task_env(project, info)
    if decision in ("auto", "approved") and approval.get("record_in_registry"):
        run_command(pipeline_cli(params, "registry", "approve", "--version", version, "--by", by),
                    workspace, env, cli_timeout_s, "approve")
    if decision in ("auto", "approved"):
        promote = pipeline_cli(params, "registry", "promote", "--version", version,
                               "--by", PROMOTER)
        run_command(promote, workspace, env, cli_timeout_s, "promote")
        now_champion = champion_version(project, params.registry.model_name)
        if now_champion != version:
            raise RuntimeError(f"promoted {version} but @champion is version {now_champion}")
        outcome = "promoted"
    elif decision == "rejected":
        if approval.get("record_in_registry"):
            reject = pipeline_cli(params, "registry", "reject", "--version", version, "--by", by)
            run_command(reject, workspace, env, cli_timeout_s, "reject")
        outcome = "rejected"
    else:
        mlflow_client(project).set_model_version_tag(
            params.registry.model_name, version, APPROVAL_TAG, "expired"
        )
        outcome = "expired"
    if approval.get("via") == VIA_HAND_MOVE:  # the version's own record says it too
        mlflow_client(project).set_model_version_tag(
            params.registry.model_name, version, APPROVAL_TAG, "approved"
        )
    if approval.get("via") == VIA_TAG and not approval.get("by"):  # a name added after
        tags = mlflow_client(project).get_model_version(params.registry.model_name, version).tags
        approval = {**approval, "by": tags.get("approved_by")}
    report = read_json(workspace / GATE_REPORT)
    concluded_at = datetime.now(UTC).isoformat()
    approval = {**approval, "by": decided_by(approval)}
    report.update(outcome=outcome, approval=approval, version=version, concluded_at=concluded_at)
    log.info("version %s: %s; decided by %s%s", version, outcome, approval["by"],
             f" ({approval['via']})" if approval.get("via") else "")
    record(project, info, report, version=version)
    return {"outcome": outcome, "version": version}
