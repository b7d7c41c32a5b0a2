"""`python -m pipeline registry diff A B`: why two registered versions differ.

    python -m pipeline registry diff 7 8
    python -m pipeline registry diff @champion @challenger --json

Compares, from each version's tags and the lineage files stored with its model
(`pipeline.registry.provenance`): params (key by key), data (window, hashes, validation
counts, remote), code (the git commits between the two), metrics (`reports/eval.json` of each
run) and gate reports. Versions registered before lineage files existed compare by tags only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pipeline.registry import comparison, lineage

HELP = "compare two versions: params, data window, code commits, metrics, gate reports"
MAX_COMMITS = 30
GIT_TIMEOUT_S = 30
DATA_TAGS = (
    lineage.TAG_DATA_START, lineage.TAG_DATA_END, lineage.TAG_DATA_HASH, lineage.TAG_MODEL_HASH,
    lineage.TAG_VALIDATION, lineage.TAG_PARAMS_HASH, lineage.TAG_DVC_REMOTE,
    lineage.TAG_AIRFLOW_RUN,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="older version: 7, @champion or models:/seqrec/7")
    parser.add_argument("b", help="newer version")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def params_diff(a: dict | None, b: dict | None) -> list[dict[str, Any]]:
    """Keys (`section.key`) whose value differs, with both values."""
    flat_a, flat_b = _flatten(a or {}), _flatten(b or {})
    keys = list(flat_a) + [key for key in flat_b if key not in flat_a]
    return [
        {"key": key, "a": flat_a.get(key), "b": flat_b.get(key)}
        for key in keys
        if flat_a.get(key) != flat_b.get(key)
    ]


def _flatten(section: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(section, dict) and section:
        found: dict[str, Any] = {}
        for key, value in section.items():
            found.update(_flatten(value, f"{prefix}{key}."))
        return found
    return {prefix.rstrip("."): section}


def commits_between(repo: Path, sha_a: str | None, sha_b: str | None) -> dict[str, Any]:
    """The commits from A to B (`git log A..B`, or both sides when neither contains the other)."""
    if not sha_a or not sha_b:
        return {"available": False, "reason": "a version has no git sha", "commits": []}
    if sha_a == sha_b:
        return {"available": True, "same": True, "commits": []}
    known = all(_git(repo, "cat-file", "-e", f"{sha}^{{commit}}") is not None
                for sha in (sha_a, sha_b))
    if not known:
        return {"available": False, "commits": [],
                "reason": "a commit is not in this repository (git fetch)"}
    ahead = _git(repo, "merge-base", "--is-ancestor", sha_a, sha_b) is not None
    spec = [f"{sha_a}..{sha_b}"] if ahead else ["--left-right", f"{sha_a}...{sha_b}"]
    out = _git(repo, "log", "--format=%m %h %ad %s", "--date=short", *spec) or ""
    lines = [line.lstrip("> ") if ahead else line for line in out.splitlines()]
    return {"available": True, "same": False, "linear": ahead, "count": len(lines),
            "commits": lines[:MAX_COMMITS]}


def _git(repo: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              check=True, timeout=GIT_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _gate(version) -> dict[str, Any] | None:
    report = version.gate_report()
    if report is None:
        passed = version.tags.get("seqrec.gate_passed")
        return {"passed": passed} if passed else None
    return {key: report.get(key) for key in ("decision", "passed", "reasons", "champion_version",
                                              "best_baseline")}


def build(a, b, repo: Path) -> dict[str, Any]:
    """The whole comparison as a JSON-able dict."""
    eval_a, eval_b = a.evaluation() or {}, b.evaluation() or {}
    rows = comparison.metric_rows(comparison.numbers(eval_a.get("model", {})),
                                  comparison.numbers(eval_b.get("model", {})))
    return {
        "a": a.label, "b": b.label,
        "lineage_files": {a.label: a.lineage_dir is not None, b.label: b.lineage_dir is not None},
        "code": {"a": a.git_sha, "b": b.git_sha, "dirty_a": a.dirty, "dirty_b": b.dirty,
                 **commits_between(repo, a.git_sha, b.git_sha)},
        "params": params_diff(a.params(), b.params()),
        "data": [{"tag": tag, "a": a.tags.get(tag), "b": b.tags.get(tag)} for tag in DATA_TAGS
                 if a.tags.get(tag) is not None or b.tags.get(tag) is not None],
        "metrics": [row.to_dict() for row in rows],
        "gate": {"a": _gate(a), "b": _gate(b)},
    }


def render(diff: dict[str, Any]) -> str:
    a, b = diff["a"], diff["b"]
    code = diff["code"]
    lines = [f"{a} -> {b}", "", "code:"]
    lines.append(f"  {code['a'] or '-'}{' (dirty)' if code['dirty_a'] else ''} -> "
                 f"{code['b'] or '-'}{' (dirty)' if code['dirty_b'] else ''}")
    if not code["available"]:
        lines.append(f"  commits: unknown ({code['reason']})")
    elif code["same"]:
        lines.append("  same commit")
    else:
        kind = "" if code["linear"] else " (diverged: < only in A, > only in B)"
        lines.append(f"  {code['count']} commit(s){kind}:")
        lines += [f"    {line}" for line in code["commits"]]
    lines += ["", f"params: {len(diff['params'])} differ"
              + ("" if all(diff["lineage_files"].values()) else " (lineage files missing)")]
    lines += [f"  {row['key']}: {json.dumps(row['a'])} -> {json.dumps(row['b'])}"
              for row in diff["params"]]
    lines += ["", "data:"]
    lines += [f"  {row['tag'].removeprefix('seqrec.')}: {row['a'] or '-'} -> {row['b'] or '-'}"
              + ("" if row["a"] != row["b"] else "  (same)") for row in diff["data"]]
    rows = [[r["metric"], comparison.fmt(r["before"]), comparison.fmt(r["after"]),
             comparison.fmt_delta(r["delta"])] for r in diff["metrics"]]
    lines += ["", "metrics (reports/eval.json, model):",
              comparison.table(["metric", a, b, "delta"], rows) if rows else "  none recorded"]
    lines += ["", "gate:"]
    for side, label in (("a", a), ("b", b)):
        gate = diff["gate"][side]
        if gate is None:
            lines.append(f"  {label}: no gate report")
            continue
        verdict = gate.get("decision") or ("pass" if gate.get("passed") in (True, "true")
                                           else "fail")
        lines.append(f"  {label}: {verdict}")
        lines += [f"    {reason}" for reason in gate.get("reasons") or []]
    return "\n".join(lines)


def run_diff(args: argparse.Namespace, params, client) -> int:
    from pipeline import tracking
    from pipeline.registry import recorded

    name = params.registry.model_name
    uri = tracking.tracking_uri()
    versions = [recorded.resolve(client, ref, name) for ref in (args.a, args.b)]
    with tempfile.TemporaryDirectory(prefix="seqrec-diff-") as tmp:
        for index, version in enumerate(versions):
            recorded.fetch_lineage(version, uri, uri, Path(tmp) / str(index))
        diff = build(*versions, tracking.project_root())
    print(json.dumps(diff, indent=2) if args.json else render(diff))
    return 0
