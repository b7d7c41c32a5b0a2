"""`python -m pipeline reproduce models:/seqrec/<version | @alias>`: rebuild a version, compare.

    python -m pipeline reproduce models:/seqrec/7 [--allow-dirty] [--remote URL]
                                 [--report reports/reproduce/v7.json] [--keep]

The version's lineage (its commit, the `dvc.lock`, params and metrics stored with its model,
the DVC remote in `seqrec.dvc_remote`) is turned back into a run in a temporary git worktree
(`pipeline.registry.rebuild`), the pipeline runs again there, and its metrics are compared
with the registered ones within `reproduce.tolerance`. A table (metric, registered,
reproduced, delta) goes to stdout, a report to `reports/reproduce/v<N>.{json,md}` (and the
version's run), and the version is tagged `seqrec.reproduced_at`, `seqrec.reproduce_delta`
(largest |delta|) and `seqrec.reproduce_passed`.

Exit status: 0 within tolerance; 1 when it cannot be rebuilt (a dirty version without
--allow-dirty, an object missing from the remote, a failing stage: one line on stderr);
3 when it was rebuilt but a metric is outside the tolerance.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.errors import RegistryError

logger = logging.getLogger(__name__)

EXIT_OUTSIDE_TOLERANCE = 3
FILES_SHOWN = 3
REPORT_DIR = "reports/reproduce"
TAG_REPRODUCED_AT = "seqrec.reproduced_at"
TAG_REPRODUCE_DELTA = "seqrec.reproduce_delta"
TAG_REPRODUCE_PASSED = "seqrec.reproduce_passed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="models:/<name>/<version> or models:/<name>@<alias> (or <version>, @<alias>)"
    )
    parser.add_argument(
        "--allow-dirty", action="store_true",
        help="rebuild a version registered from uncommitted changes (its recorded diff is "
        "applied; untracked files are lost, so the result may differ)",
    )
    parser.add_argument(
        "--remote", help="DVC remote URL to restore from (default: the version's seqrec.dvc_remote)"
    )
    parser.add_argument("--report", help=f"report JSON (default: {REPORT_DIR}/v<N>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary worktree")


def refusal(recorded) -> str | None:
    """Why `recorded` cannot be rebuilt without --allow-dirty, or None."""
    from pipeline.registry import lineage

    if recorded.git_sha is None:
        return (f"{recorded.label} has no {lineage.TAG_GIT_SHA} tag: it was registered outside "
                "git, so no commit holds its code")
    if recorded.dirty:
        flag = recorded.tags.get(lineage.TAG_GIT_DIRTY)
        return (f"{recorded.label} was registered from a dirty tree "
                f"({lineage.TAG_GIT_DIRTY}={flag}): its code is "
                f"not exactly commit {recorded.git_sha[:12]}; pass --allow-dirty to rebuild it "
                "from that commit and its recorded diff anyway")
    return None


def _remote(args: argparse.Namespace, recorded):
    """Where to restore from: --remote, else the remote the version's tags name.

    Under its recorded name, so a remote the commit's `.dvc/config` defines (an S3 endpoint,
    say) keeps its other settings and only its URL is set.
    """
    from pipeline.registry import dvc_store, lineage

    if args.remote:
        return dvc_store.Remote("reproduce", args.remote)
    url = recorded.tags.get(lineage.TAG_DVC_REMOTE)
    if not url:
        raise RegistryError(f"{recorded.label} has no {lineage.TAG_DVC_REMOTE} tag; "
                            "pass --remote URL (where its data was pushed)")
    return dvc_store.Remote(recorded.tags.get(lineage.TAG_DVC_REMOTE_NAME, "recorded"), url)


def compare(recorded, tree: Path, settings) -> dict[str, Any]:
    """Metrics and output hashes of the re-run against the registered ones."""
    from pipeline.registry import comparison, provenance

    registered = recorded.evaluation()
    if registered is None:
        raise RegistryError(f"{recorded.label}: no eval.json among its lineage files, "
                            "so there are no registered metrics to compare with")
    rebuilt = tree / "reports" / "eval.json"
    if not rebuilt.is_file():
        raise RegistryError(f"{rebuilt}: the re-run wrote no evaluation to compare")
    reproduced = json.loads(rebuilt.read_text())
    model_rows = comparison.metric_rows(
        comparison.numbers(registered.get("model", {})),
        comparison.numbers(reproduced.get("model", {})),
        settings.metrics,
        settings.tolerance,
    )
    baseline_rows = comparison.metric_rows(
        comparison.numbers(registered.get("baselines", {})),
        comparison.numbers(reproduced.get("baselines", {})),
    )
    before = comparison.lock_outputs(recorded.file(provenance.LOCK_FILE).read_text())
    after = comparison.lock_outputs((tree / provenance.LOCK_FILE).read_text())
    outputs = []
    for (stage, path), md5 in before.items():
        new = after.get((stage, path))
        row = {"stage": stage, "path": path, "registered_md5": md5, "reproduced_md5": new,
               "identical": new == md5}
        if new != md5 and new is not None:
            row["files_differ"] = _files_differ(tree, md5, new)
        outputs.append(row)
    deltas = [abs(row.delta) for row in model_rows if row.delta is not None]
    return {
        "metrics": [row.to_dict() for row in model_rows],
        "baselines": [row.to_dict() for row in baseline_rows],
        "outputs": outputs,
        "max_abs_delta": max(deltas) if deltas else None,
        "passed": bool(model_rows) and all(row.within for row in model_rows),
    }


def _files_differ(tree: Path, before: str, after: str) -> list[str] | None:
    """Which files of a folder output changed, when both listings are in the cache."""
    from pipeline.registry import dvc_store

    old, new = dvc_store.dir_entries(tree, before), dvc_store.dir_entries(tree, after)
    if old is None or new is None:
        return None
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def render(report: dict[str, Any], markdown: bool = False) -> str:
    from pipeline.registry import comparison

    fmt, fmt_delta = comparison.fmt, comparison.fmt_delta
    rows = [[row["metric"], fmt(row["before"]), fmt(row["after"]), fmt_delta(row["delta"]),
             "ok" if row["within"] else "OUTSIDE"] for row in report["metrics"]]
    text = comparison.table(["metric", "registered", "reproduced", "delta", ""], rows, markdown)
    same = [o["path"] for o in report["outputs"] if o["identical"]]
    differ = [
        o["path"] + (f" ({', '.join(o['files_differ'][:FILES_SHOWN])}"
                     + ("..." if len(o["files_differ"]) > FILES_SHOWN else "") + ")"
                     if o.get("files_differ") else "")
        for o in report["outputs"] if not o["identical"]
    ]
    baseline_deltas = [abs(r["delta"]) for r in report["baselines"] if r["delta"] is not None]
    lines = [
        f"{report['label']} (commit {report['git_sha'][:12]}), tolerance {report['tolerance']:g}: "
        + ("reproduced" if report["passed"] else "NOT reproduced")
        + f", largest |delta| {fmt_delta(report['max_abs_delta'])}",
        "",
        text,
        "",
        f"baselines: {len(report['baselines'])} numbers, largest |delta| "
        f"{fmt_delta(max(baseline_deltas) if baseline_deltas else None)}",
        f"outputs bit-identical to the registered run: {', '.join(same) or 'none'}",
        f"outputs that differ (files): {'; '.join(differ) or 'none'}",
    ]
    return "\n".join(lines)


def _write_report(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text("# Reproduce " + render(report, markdown=True) + "\n")
    return path


def _tag(client, recorded, report: dict[str, Any]) -> None:
    from pipeline.registry import comparison

    tags = {
        TAG_REPRODUCED_AT: report["reproduced_at"],
        TAG_REPRODUCE_DELTA: comparison.fmt_delta(report["max_abs_delta"]).lstrip("+"),
        TAG_REPRODUCE_PASSED: str(report["passed"]).lower(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(recorded.name, recorded.version, key, value)
    if recorded.run_id:
        client.log_dict(recorded.run_id, report,
                        f"registry/reproduce_v{recorded.version}.json")


def run(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.params import load_params
    from pipeline.registry import rebuild
    from pipeline.registry import recorded as recorded_mod
    from pipeline.registry.promotion import now_iso

    params = load_params(args.params)
    settings = params.reproduce
    uri = tracking.configure()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    recorded = recorded_mod.resolve(client, args.model, params.registry.model_name)
    why = refusal(recorded)
    if why and not (args.allow_dirty and recorded.git_sha):
        raise RegistryError(why)
    remote = _remote(args, recorded)
    project = tracking.project_root()
    report_path = Path(args.report or f"{REPORT_DIR}/v{recorded.version}.json")
    work = Path(tempfile.mkdtemp(prefix=f"seqrec-reproduce-v{recorded.version}-",
                                 dir=settings.workdir))
    tree = work / "src"
    started = time.monotonic()
    try:
        if recorded_mod.fetch_lineage(recorded, uri, uri, work / "recorded") is None:
            raise RegistryError(f"{recorded.label} has no lineage files (registered before "
                                "reproduce existed): it cannot be rebuilt exactly")
        print(f"{recorded.label}: commit {recorded.git_sha[:12]} -> {tree}", flush=True)
        rebuild.checkout(project, recorded.git_sha, tree)
        rebuild.write_lineage(tree, recorded, apply_patch=args.allow_dirty)
        env = rebuild.command_env(tree)
        print(f"restoring data and models from {remote.url}", flush=True)
        rebuild.restore(tree, remote, env)
        changed = rebuild.source_changes(tree, env)
        if changed and not args.allow_dirty:
            raise RegistryError(f"{recorded.label}: the worktree does not match its dvc.lock "
                                f"({'; '.join(changed[:3])})")
        print(f"re-running: {settings.command}", flush=True)
        log_path = report_path.with_suffix(".log")
        rebuild.rerun(tree, settings.command, env, log_path)
        report = {
            "label": recorded.label, "model": recorded.name, "version": recorded.version,
            "git_sha": recorded.git_sha, "remote": remote.url, "reproduced_at": now_iso(),
            "tolerance": settings.tolerance, "command": settings.command,
            "allow_dirty": bool(args.allow_dirty), "source_changes": changed,
            "wall_seconds": round(time.monotonic() - started, 1), "log": str(log_path),
            **compare(recorded, tree, settings),
        }
    finally:
        if args.keep:
            print(f"kept the worktree: {tree}")
        else:
            rebuild.remove_checkout(project, tree)
            shutil.rmtree(work, ignore_errors=True)
    _write_report(report, report_path)
    _tag(client, recorded, report)
    print(render(report))
    print(f"report: {report_path} (and {report_path.with_suffix('.md')})")
    return 0 if report["passed"] else EXIT_OUTSIDE_TOLERANCE
