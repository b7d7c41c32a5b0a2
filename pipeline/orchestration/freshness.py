"""Warm re-fine-tuning or a full rebuild: the retrain DAG's choice, from drift and history.

A warm retrain starts from `@champion` (`retrain.init: champion`): cheap, and it keeps what
the champion learnt. It drifts away from a model trained on today's data when the shop
changes, so the DAG rebuilds (`retrain.init: pretrained`: pretraining from random weights
on the whole history) when:

- `retrain.dag_init` is `pretrained` (the operator asked for rebuilds only);
- the `model` params no longer describe the champion's architecture (a new default after an
  upgrade, a wider model): its weights cannot be carried over;
- there is no `@champion` (or its folder could not be seeded) to start from;
- the drift report (`reports/drift.json`, the `drift` stage) says the new snapshot drifted
  from the champion's training data;
- `retrain.rebuild_every_n_runs` warm runs in a row have happened (the champion's tag
  `seqrec.warm_runs` counts them), drift or not: small errors of warm starts add up.

The choice goes to `reports/retrain.json` (read by registration into the version's tags
`seqrec.retrain_mode`, `seqrec.retrain_reason`, `seqrec.warm_runs`), the task log and the
gate report; the workspace's `params.yaml` gets the matching `retrain.init`.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import yaml

from pipeline.orchestration.runtime import mlflow_client, task_env, workspace_params
from pipeline.orchestration.workspace import run_command

log = logging.getLogger(__name__)
DRIFT_REPORT = "reports/drift.json"
RETRAIN_DECISION = "reports/retrain.json"  # = pipeline.registry.lineage.RETRAIN_DECISION
WARM_RUNS_TAG = "seqrec.warm_runs"
WARM, REBUILD = "warm", "rebuild"


def choose(retrain, seeded_version: str | None, warm_runs: int, drift: dict | None,
           changed: list[str] | None = None) -> dict:
    """The decision as `{mode, reason, warm_runs}`; a pure function of its inputs.

    Args:
        retrain: the `retrain` params section.
        seeded_version: the champion version whose folder the workspace holds, or None.
        warm_runs: warm runs in a row behind that champion (its `seqrec.warm_runs` tag).
        drift: the drift report, or None when there is none.
        changed: architecture fields whose params differ from the champion's
            (`architecture_changes`).
    """
    if retrain.dag_init == "pretrained":
        return _decision(REBUILD, "retrain.dag_init is pretrained")
    if seeded_version is None:
        return _decision(REBUILD, "no @champion to warm-start from")
    if changed:
        return _decision(REBUILD, "architecture changed since the champion: "
                                  + ", ".join(changed))
    if drift is not None and drift.get("drifted"):
        return _decision(REBUILD, "drift: " + "; ".join(drift.get("reasons", [])))
    every = retrain.rebuild_every_n_runs
    if every is not None and warm_runs >= every:
        return _decision(REBUILD, f"{warm_runs} warm runs in a row since the last rebuild "
                                  f"(retrain.rebuild_every_n_runs={every})")
    return _decision(WARM, f"warm start from @champion version {seeded_version}: no drift, "
                           f"warm run {warm_runs + 1} of at most {every or 'unlimited'}",
                     warm_runs + 1)


def _decision(mode: str, reason: str, warm_runs: int = 0) -> dict:
    return {"mode": mode, "reason": reason, "warm_runs": warm_runs}


def architecture_changes(params, champion_dir: Path) -> list[str]:
    """`field: champion -> params` for each architecture field the params set differently.

    Only fields the params decide (the data decides vocabulary and feature counts, which a
    warm start maps). A folder without config.json has nothing to compare: [].
    """
    from pipeline.model.config import ModelConfig

    config_path = champion_dir / "config.json"
    if not config_path.is_file():
        return []
    theirs = ModelConfig.from_dict(json.loads(config_path.read_text()), str(config_path))
    m = params.model
    ours = {"max_len": params.sequences.max_len, "hidden_dim": m.hidden_dim,
            "n_layers": m.n_layers, "n_heads": m.n_heads, "ffn_dim": m.ffn_dim or m.hidden_dim,
            "time_gap_buckets": m.time_gap_buckets, "repeat_head": m.repeat_head,
            "positions": m.positions, "transition_top_k": m.transition_top_k}
    return [f"{key} {getattr(theirs, key)} -> {value}" for key, value in ours.items()
            if getattr(theirs, key) != value]


def champion_warm_runs(project: Path, model_name: str, version: str | None) -> int:
    """The champion's `seqrec.warm_runs` tag (0 when absent: a rebuild or a hand-made one)."""
    if version is None:
        return 0
    tag = mlflow_client(project).get_model_version(model_name, version).tags.get(WARM_RUNS_TAG)
    try:
        return int(tag) if tag is not None else 0
    except ValueError:
        return 0


def decide_and_apply(project: Path, info: dict[str, Any]) -> dict:
    """Run the pipeline up to the drift report, choose, set `retrain.init`, record the choice."""
    params = workspace_params(info)
    workspace = Path(info["workspace"])
    seeded = info.get("seeded_from_champion")
    if seeded is not None and params.retrain.dag_init == "champion":
        run_command(shlex.split(params.airflow.drift_command), workspace,
                    task_env(project, info), params.airflow.pipeline_timeout_minutes * 60,
                    "drift")
    drift_path = workspace / DRIFT_REPORT
    drift = json.loads(drift_path.read_text()) if drift_path.is_file() else None
    warm_runs = champion_warm_runs(project, params.registry.model_name, seeded)
    changed = (architecture_changes(params, workspace / params.retrain.init_from)
               if seeded is not None and params.retrain.init_from else [])
    decision = choose(params.retrain, seeded, warm_runs, drift, changed)
    decision["champion_version"] = seeded
    decision["drift"] = None if drift is None else {
        key: drift.get(key) for key in ("drifted", "reasons", "reference")}
    init = "champion" if decision["mode"] == WARM else "pretrained"
    params_path = workspace / "params.yaml"
    raw = yaml.safe_load(params_path.read_text()) or {}
    raw.setdefault("retrain", {})["init"] = init
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = workspace / RETRAIN_DECISION
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(decision, indent=2) + "\n")
    log.info("retrain: %s (retrain.init=%s): %s", decision["mode"], init, decision["reason"])
    return decision
