"""Approval, promotion and rollback of registered model versions (MLflow aliases).

The aliases are the truth: `@champion` serves, `@challenger` waits for a decision,
`@previous_champion` is one command away (`rollback`). Whatever a person does in the MLflow
UI (set the `approval` tag, move `@champion` by hand) is read back from the registry, never
from local state. Every alias move is recorded in the registered model's `alias_history`
tag (newest last) and on the versions (`promoted_at`, `demoted_at`, `rolled_back_at`).

Retries are safe: approving twice keeps the first decision's time; promoting a version that
already holds `@champion` moves nothing and records nothing.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import RegistryError, raise_if_unreachable

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
APPROVAL_TAG = "approval"
APPROVED = "approved"
REJECTED = "rejected"
# Set at registration so the version page shows an `approval` row to edit in place.
PENDING = "pending"
DECISIONS = (APPROVED, REJECTED)
# A decision typed into the MLflow UI carries no name: the open-source server records none.
UNKNOWN_APPROVER = "unknown (set in the MLflow UI)"
APPROVED_BY_TAG = "approved_by"
APPROVED_AT_TAG = "approved_at"
APPROVED_BY_ACCOUNT_TAG = "approved_by_account"
PROMOTED_AT_TAG = "promoted_at"
PROMOTED_BY_TAG = "promoted_by"
DEMOTED_AT_TAG = "demoted_at"
ROLLED_BACK_AT_TAG = "rolled_back_at"
ALIAS_HISTORY_TAG = "alias_history"
# Registry tag values are 5000 characters in MLflow's SQL schema; keep the newest entries.
MAX_HISTORY_CHARS = 5000


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")


def authenticated_account() -> str | None:
    """The MLflow login this process acts as (basic auth), if any."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or None


def default_actor() -> str:
    """The MLflow login when the server authenticates us, else the OS user."""
    account = authenticated_account()
    if account:
        return account
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def current_aliases(client, name: str) -> dict[str, str]:
    """alias -> version (as a string) of registered model `name`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise_if_unreachable(exc)
        raise RegistryError(
            f"registered model {name!r} not found in {mlflow.get_registry_uri()}: "
            "run `python -m pipeline registry register` first"
        ) from exc
    return {alias: str(version) for alias, version in model.aliases.items()}


def alias_history(client, name: str) -> list[dict[str, Any]]:
    raw = client.get_registered_model(name).tags.get(ALIAS_HISTORY_TAG)
    return json.loads(raw) if raw else []


def record_move(
    client, name: str, action: str, alias: str, version: str | None, previous: str | None, by: str
) -> None:
    """Append one alias move to the registered model's `alias_history` tag."""
    history = alias_history(client, name)
    history.append(
        {
            "at": now_iso(),
            "action": action,
            "alias": alias,
            "version": version,
            "previous": previous,
            "by": by,
        }
    )
    text = json.dumps(history, separators=(",", ":"))
    while len(text) > MAX_HISTORY_CHARS and len(history) > 1:
        history.pop(0)
        text = json.dumps(history, separators=(",", ":"))
    client.set_registered_model_tag(name, ALIAS_HISTORY_TAG, text)


def move_alias(client, name: str, alias: str, version: str, by: str, action: str) -> bool:
    """Point `alias` at `version`; False (and nothing recorded) when it already does."""
    previous = current_aliases(client, name).get(alias)
    if previous == str(version):
        return False
    client.set_registered_model_alias(name, alias, str(version))
    record_move(client, name, action, alias, str(version), previous, by)
    return True


def clear_alias(client, name: str, alias: str, by: str, action: str) -> None:
    previous = current_aliases(client, name).get(alias)
    if previous is None:
        return
    client.delete_registered_model_alias(name, alias)
    record_move(client, name, action, alias, None, previous, by)


def is_undecided(approval: str | None) -> bool:
    """No decision yet: no `approval` tag (versions registered before the pending row) or
    `approval=pending`."""
    return approval in (None, PENDING)


def approver(tags: dict[str, str]) -> str | None:
    """Who approved or rejected: `approved_by`, else UNKNOWN_APPROVER; None before a decision
    (and for `expired`, which nobody decided)."""
    if tags.get(APPROVAL_TAG) not in DECISIONS:
        return None
    return tags.get(APPROVED_BY_TAG) or UNKNOWN_APPROVER


def _resolve_version(client, name: str, version: str | None, what: str) -> str:
    if version is not None:
        return str(client.get_model_version(name, str(version)).version)
    challenger = current_aliases(client, name).get(CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name}: no @{CHALLENGER} to {what}; pass --version N")
    return challenger


def decide(client, name: str, decision: str, version: str | None, by: str) -> tuple[str, bool]:
    """Set `approval=<decision>` with who and when on a version (default: the challenger).

    Returns:
        (version, changed): changed is False when the version already had this decision.
    """
    if decision not in DECISIONS:
        raise RegistryError(f"approval must be one of {DECISIONS}, got {decision!r}")
    version = _resolve_version(client, name, version, decision.removesuffix("d"))
    tags = client.get_model_version(name, version).tags
    if tags.get(APPROVAL_TAG) == decision:
        return version, False
    client.set_model_version_tag(name, version, APPROVAL_TAG, decision)
    client.set_model_version_tag(name, version, APPROVED_BY_TAG, by)
    client.set_model_version_tag(name, version, APPROVED_AT_TAG, now_iso())
    account = authenticated_account()
    if account:  # the login the server checked; `by` may name a person behind a service login
        client.set_model_version_tag(name, version, APPROVED_BY_ACCOUNT_TAG, account)
    return version, True


@dataclass
class PromotionResult:
    version: str
    moved: bool
    previous_champion: str | None


def promote(client, name: str, version: str | None, by: str, force: bool) -> PromotionResult:
    """Move `@champion` to `version` (default: the challenger); the old one becomes
    `@previous_champion`. Needs `approval=approved` unless `force`.

    Order matters for a retry after a crash: `@previous_champion` is set before
    `@champion` moves, so a second call still sees the old champion and finishes the move.
    """
    version = _resolve_version(client, name, version, "promote")
    aliases = current_aliases(client, name)
    old = aliases.get(CHAMPION)
    if old == version:
        _finish_promotion(client, name, version, by)
        return PromotionResult(
            version, moved=False, previous_champion=aliases.get(PREVIOUS_CHAMPION)
        )
    approval = client.get_model_version(name, version).tags.get(APPROVAL_TAG)
    if approval != APPROVED and not force:
        state = f"approval={approval}" if approval else "no approval tag"
        if approval == PENDING:
            state = "approval=pending (no decision yet)"
        raise RegistryError(
            f"{name} v{version}: {state}; approve it first "
            f"(registry approve --version {version}) or pass --force"
        )
    now = now_iso()
    if old is not None:
        move_alias(client, name, PREVIOUS_CHAMPION, old, by, "promote")
        client.set_model_version_tag(name, old, DEMOTED_AT_TAG, now)
    move_alias(client, name, CHAMPION, version, by, "promote")
    client.set_model_version_tag(name, version, PROMOTED_AT_TAG, now)
    client.set_model_version_tag(name, version, PROMOTED_BY_TAG, by)
    _finish_promotion(client, name, version, by)
    return PromotionResult(version, moved=True, previous_champion=old)


def _finish_promotion(client, name: str, version: str, by: str) -> None:
    if current_aliases(client, name).get(CHALLENGER) == version:
        clear_alias(client, name, CHALLENGER, by, "promote")


def rollback(client, name: str, by: str) -> PromotionResult:
    """`@champion` goes back to `@previous_champion`'s version, which loses that alias.

    The demoted version is tagged `rolled_back_at`. A second rollback has nothing to go back
    to and says so (rather than flipping back to the version just rolled back).
    """
    aliases = current_aliases(client, name)
    target = aliases.get(PREVIOUS_CHAMPION)
    if target is None:
        raise RegistryError(
            f"{name}: no @{PREVIOUS_CHAMPION} to roll back to "
            f"(@{CHAMPION} is {aliases.get(CHAMPION, 'unset')})"
        )
    current = aliases.get(CHAMPION)
    move_alias(client, name, CHAMPION, target, by, "rollback")
    clear_alias(client, name, PREVIOUS_CHAMPION, by, "rollback")
    if current is not None and current != target:
        client.set_model_version_tag(name, current, ROLLED_BACK_AT_TAG, now_iso())
    return PromotionResult(target, moved=True, previous_champion=None)


@dataclass
class RegistryStatus:
    name: str
    aliases: dict[str, str]
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "champion": self.aliases.get(CHAMPION),
            "challenger": self.aliases.get(CHALLENGER),
            "previous_champion": self.aliases.get(PREVIOUS_CHAMPION),
            "aliases": self.aliases,
            "pending_approval": self.pending,
            "versions": self.versions,
            "alias_history": self.history,
        }


def status(client, name: str) -> RegistryStatus:
    """Aliases, per-version approval state and the versions still waiting for a decision.

    Pending: `approval` missing or `pending` (any other value, e.g. the `expired` the DAG
    sets, is a decision) and holding neither `@champion` nor `@previous_champion` (a version
    a person moved `@champion` to by hand is decided by that move). `approved_by` of a
    decided version without that tag is UNKNOWN_APPROVER.
    """
    aliases = current_aliases(client, name)
    holders = {aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)}
    versions: dict[str, dict[str, Any]] = {}
    pending = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        version = str(mv.version)
        tags = mv.tags or {}
        versions[version] = {
            "aliases": sorted(a for a, v in aliases.items() if v == version),
            "approval": tags.get(APPROVAL_TAG),
            "approved_by": approver(tags),
            "approved_at": tags.get(APPROVED_AT_TAG),
            "promoted_at": tags.get(PROMOTED_AT_TAG),
            "pipeline_run": tags.get("seqrec.pipeline_run_id"),
        }
        if is_undecided(tags.get(APPROVAL_TAG)) and version not in holders:
            pending.append(version)
    return RegistryStatus(
        name=name,
        aliases=aliases,
        versions=dict(sorted(versions.items(), key=lambda kv: int(kv[0]))),
        pending=sorted(pending, key=int),
        history=alias_history(client, name),
    )
