"""`python -m pipeline registry <command>`: the model registry from the command line.

    python -m pipeline registry register [--package models/mlflow_model] [--champion-metrics F]
                                         [--gate-report F] [--airflow-run-id ID]
                                         [--push] [--allow-dirty]
    python -m pipeline registry approve  [--version N] [--by NAME]  (default: the MLflow login)
    python -m pipeline registry reject   [--version N] [--by NAME]
    python -m pipeline registry promote  [--version N] [--force] [--by NAME]
    python -m pipeline registry rollback [--by NAME]
    python -m pipeline registry status   [--json]
    python -m pipeline registry diff     A B [--json]

The store is `MLFLOW_TRACKING_URI` (default: the project's SQLite file, see
`pipeline.tracking`); the model name is `registry.model_name`. Aliases are the truth, so a
`@champion` moved by hand in the UI is what `status` and `promote` see. docs/registry.md
walks through approving in the UI.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.errors import raise_if_unreachable

logger = logging.getLogger(__name__)

GATE_PASSED_TAG = "seqrec.gate_passed"
GATE_ARTIFACT = "registry/gate_report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    register = sub.add_parser("register", help="log the packaged model and register @challenger")
    register.add_argument("--package", default="models/mlflow_model", help="packaged pyfunc folder")
    register.add_argument(
        "--sequences", default="data/sequences", help="sequences folder (lineage)"
    )
    register.add_argument("--model", default="models/finetuned", help="finetuned folder (lineage)")
    register.add_argument("--eval", default="reports/eval.json", help="full evaluation JSON")
    register.add_argument(
        "--validation", default="reports/validation/summary.json", help="validation summary JSON"
    )
    register.add_argument("--champion-metrics", help="the champion's scores on the same test data")
    register.add_argument("--gate-report", help="gate report JSON to attach")
    register.add_argument(
        "--airflow-run-id", help="Airflow DAG run id (default: $AIRFLOW_CTX_DAG_RUN_ID)"
    )
    register.add_argument("--run-id", help="MLflow run to log into (default: this pipeline's run)")
    register.add_argument("--by", help="who registers (default: the OS user)")
    register.add_argument(
        "--push", action="store_true", help="`dvc push` the run's data and models first (the DAG)"
    )
    register.add_argument(
        "--allow-dirty", action="store_true",
        help="register from uncommitted changes or untracked inputs (local experiments; "
        "tagged seqrec.dirty_allowed, not rebuildable from git)",
    )

    for action in ("approve", "reject"):
        decision = sub.add_parser(action, help=f"{action} a version (default: the challenger)")
        decision.add_argument("--version", help="version number (default: @challenger)")
        decision.add_argument("--by", help="who decides (recorded; default: the MLflow login "
                              "MLFLOW_TRACKING_USERNAME, required without one)")

    promote = sub.add_parser("promote", help="move @champion (default: to the approved challenger)")
    promote.add_argument("--version", help="version number (default: @challenger)")
    promote.add_argument("--force", action="store_true", help="promote without approval")
    promote.add_argument("--by", help="who promotes (default: the OS user)")

    rollback = sub.add_parser("rollback", help="@champion back to @previous_champion")
    rollback.add_argument("--by", help="who rolls back (default: the OS user)")

    status = sub.add_parser("status", help="champion, challenger and pending approvals")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    from pipeline.registry import diff

    diff.add_arguments(sub.add_parser("diff", help=diff.HELP, description=diff.HELP))


def _client():
    from mlflow import MlflowClient

    from pipeline import tracking

    uri = tracking.configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _pipeline_run_id(params_path: str, experiment: str) -> tuple[str, str]:
    """(experiment id, parent run id) of this pipeline run, creating the parent if missing."""
    import mlflow

    from pipeline import tracking

    experiment_id = tracking.ensure_experiment(experiment)
    key = tracking.pipeline_key(params_path)
    parent = tracking.find_pipeline_run(experiment_id, key)
    if parent is not None:
        return experiment_id, parent.info.run_id
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"pipeline {key}",
        tags={tracking.PIPELINE_KEY_TAG: key, tracking.STAGE_TAG: "pipeline"},
    ) as created:
        return experiment_id, created.info.run_id


def _register(args: argparse.Namespace, params, client) -> int:
    from pipeline.registry import lineage, model_card, promotion, provenance, registration

    name = params.registry.model_name
    # The tree the run was built in (where `dvc repro` ran and its dvc.lock lies): a DAG
    # workspace, not SEQREC_HOME, which names where the project's stores live.
    root = Path.cwd().resolve()
    sequences = Path(args.sequences)
    tags = lineage.collect(
        root=root,
        params=params,
        sequences_dir=sequences,
        model_dir=Path(args.model),
        validation_path=Path(args.validation),
        airflow_run=args.airflow_run_id,
    )
    # Code first: pushing data for a version that is then refused would be wasted.
    if tags.get(lineage.TAG_GIT_DIRTY) == "true" and not args.allow_dirty:
        raise registration.RegistryError(_not_rebuildable(provenance.problems(root, params, tags)))
    if args.push:
        provenance.push(root, params)
    problems = provenance.problems(root, params, tags)
    if problems and not args.allow_dirty:
        raise registration.RegistryError(_not_rebuildable(problems))
    if problems:
        tags[lineage.TAG_DIRTY_ALLOWED] = "true"
        logger.warning("registering with --allow-dirty: %s", "; ".join(problems))
    if args.run_id:
        run = client.get_run(args.run_id)
        experiment_id, run_id = run.info.experiment_id, args.run_id
    else:
        experiment_id, run_id = _pipeline_run_id(args.params, params.registry.experiment)
    gate_report = model_card.read_json(args.gate_report)
    if args.gate_report and gate_report is None:
        raise registration.RegistryError(f"{args.gate_report}: gate report file not found")
    if gate_report is not None and isinstance(gate_report.get("passed"), bool):
        tags[GATE_PASSED_TAG] = str(gate_report["passed"]).lower()
    champion = _champion_label(client, name)
    card = model_card.render(
        model_name=name,
        evaluation=model_card.read_json(args.eval),
        champion_scores=model_card.read_json(args.champion_metrics),
        champion_label=champion,
        data_stats=model_card.read_json(sequences / "stats.json"),
        lineage=tags,
        gate_report=gate_report,
        max_slices=params.registry.card_max_slices,
        approval_via=params.gate.approval_via if params.gate.require_approval else "auto",
    )
    description = model_card.fit_description(
        card, f"{registration.CARD_ARTIFACT_DIR}/model_card_v*.md"
    )
    result = registration.register(
        client,
        name=name,
        experiment_id=experiment_id,
        run_id=run_id,
        package_dir=Path(args.package),
        tags=tags,
        card=card,
        description=description,
        by=args.by or promotion.default_actor(),
        lineage_files=provenance.lineage_files(
            root, Path(args.params), Path(args.eval),
            Path(args.gate_report) if args.gate_report else None, params, bool(problems),
        ),
    )
    if gate_report is not None:
        client.log_dict(run_id, gate_report, GATE_ARTIFACT)
    verb = "registered" if result.created else "already registered"
    print(
        f"{verb} {name} v{result.version} (@challenger "
        f"{'moved' if result.challenger_moved else 'unchanged'}; key {result.idempotency_key})"
    )
    return 0


def _not_rebuildable(problems: list[str]) -> str:
    return (
        f"{problems[0]}: a version registered from here could not be rebuilt from its "
        "lineage; commit or track it, or pass --allow-dirty for a local experiment"
    )


def _champion_label(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_registered_model(name).aliases.get("champion")
    except MlflowException as exc:
        raise_if_unreachable(exc)
        champion = None
    return f"champion v{champion}" if champion is not None else "champion"


def _print_status(report: dict) -> None:
    from pipeline.registry.promotion import PENDING, UNKNOWN_APPROVER, is_undecided

    def describe(version: str | None) -> str:
        if version is None:
            return "none"
        info = report["versions"].get(version, {})
        decision = info.get("approval")
        if is_undecided(decision):
            decision = PENDING
            # A version a person moved @champion to carries no decision tag of its own.
            if version in (report["champion"], report["previous_champion"]):
                decision = f"@champion moved by hand, by {UNKNOWN_APPROVER}"
        by = f" by {info['approved_by']}" if info.get("approved_by") else ""
        return f"v{version} ({decision}{by})"

    print(f"model:             {report['model']}")
    print(f"champion:          {describe(report['champion'])}")
    print(f"challenger:        {describe(report['challenger'])}")
    print(f"previous_champion: {describe(report['previous_champion'])}")
    pending = ", ".join(f"v{v}" for v in report["pending_approval"]) or "none"
    print(f"pending approval:  {pending}")


def run(args: argparse.Namespace) -> int:
    from pipeline.params import load_params
    from pipeline.registry import promotion

    params = load_params(args.params)
    name = params.registry.model_name
    client = _client()
    action = args.registry_command
    by = getattr(args, "by", None) or promotion.default_actor()
    if action == "register":
        return _register(args, params, client)
    if action == "diff":
        from pipeline.registry import diff

        return diff.run_diff(args, params, client)
    if action in ("approve", "reject"):
        if not (args.by or promotion.authenticated_account()):
            raise promotion.RegistryError(f"{action}: pass --by NAME (no MLflow login to record)")
        decision = promotion.APPROVED if action == "approve" else promotion.REJECTED
        version, changed = promotion.decide(client, name, decision, args.version, by)
        print(f"{name} v{version}: approval={decision}" + ("" if changed else " (unchanged)"))
    elif action == "promote":
        result = promotion.promote(client, name, args.version, by, args.force)
        if result.moved:
            print(
                f"{name}: @champion -> v{result.version} "
                f"(@previous_champion -> {result.previous_champion or 'none'})"
            )
        else:
            print(f"{name}: @champion already v{result.version}; nothing moved")
    elif action == "rollback":
        result = promotion.rollback(client, name, by)
        print(f"{name}: rolled back, @champion -> v{result.version}")
    else:
        report = promotion.status(client, name).to_dict()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_status(report)
    return 0
