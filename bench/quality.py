"""Quality suite: the real pipeline (`dvc repro`) on a public dataset in a scratch workspace.

    python -m bench quality --dataset toys|sports|taobao|diginetica|yoochoose|synthetic \\
        [--set trainer.cpu_threads=1]

The workspace is a copy of this checkout's source files (git-tracked and untracked-but-not-
ignored) with `git init`, so `dvc repro` there runs every stage from nothing. Its params.yaml is
the project's params.yaml with the dataset's OVERRIDES file (bench/params/<dataset>.yaml: only
the keys that differ) applied section by section, like tests/test_pipeline_e2e.py does. One
split and one protocol for every model; checkpoints are chosen on validation NDCG@10 only
(early stopping in finetune); the test split is read once, by the evaluate stage.

The result, bench/results/quality_<dataset>.json, holds reports/eval.json, the validation
curves (metrics/finetune_log.csv, metrics/scratch_log.csv), the wall time of each stage, the
params actually used and the command; the published numbers sit beside ours in the report.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import REPO_ROOT, load_average, machine, print_table

PARAMS_DIR = REPO_ROOT / "bench" / "params"
WORK_DIR = REPO_ROOT / "bench" / "work"
SHARED_PREFIX = "../shared/data/"
PATH_KEYS = ("path", "timestamps_path", "catalog_path")
STAGE_LINE = re.compile(r"Running stage '([^']+)'")
DEFAULT_TIMEOUT_S = 3 * 3600
METRICS = ("ndcg@10", "hr@10")
# from each models/<name>/training.json: how far training got in its time budget
TRAINING_KEYS = ("epochs", "train_steps", "wall_seconds", "sequences_per_s", "best_val_ndcg@10",
                 "stopped_early", "gate_shift")

# ../shared/data/README.md, "Published quality on the Amazon sets" (leave-one-out, full
# ranking, history items excluded): model -> (HR@10, NDCG@10).
PUBLISHED = {
    "sports": {
        "popularity": (0.0094, 0.0053),
        "SASRec (BCE, one negative)": (0.0350, 0.0192),
        "DuoRec": (0.0498, 0.0262),
        "eSASRec": (0.0560, 0.0323),
        "SASRec + sampled softmax (256 neg.)": (0.0569, 0.0314),
    },
    "toys": {
        "popularity": (0.0113, 0.0061),
        "eSASRec": (0.0939, 0.0538),
        "SASRec + sampled softmax (256 neg.)": (0.0970, 0.0580),
    },
}
# The bar of the model issue: our NDCG@10 on the test split must reach these.
QUALITY_BAR_NDCG10 = {"toys": 0.0619, "sports": 0.034}
# The one Amazon recipe (bench/params/amazon.yaml) per file: (events, item attributes).
AMAZON_DATA = {
    name: (f"{SHARED_PREFIX}amazon/{stem}.txt",
           f"{SHARED_PREFIX}amazon/{stem}_item2attributes.json")
    for name, stem in (("toys", "Toys_and_Games"), ("sports", "Sports_and_Outdoors"))
}
# The one session-log recipe (bench/params/sessions.yaml) per sample: (source, path).
SESSION_DATA = {
    "diginetica": ("diginetica", f"{SHARED_PREFIX}diginetica/sample_train-item-views.csv"),
    "yoochoose": ("yoochoose", f"{SHARED_PREFIX}yoochoose"),
}


class BenchError(Exception):
    """A benchmark cannot run as asked (bad overrides, failed pipeline)."""


def shared_data_dir() -> Path:
    """`../shared/data` beside this checkout, or one level up (git worktrees)."""
    for base in (REPO_ROOT.parent, REPO_ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return REPO_ROOT.parent / "shared" / "data"


def parse_set(items: list[str]) -> dict:
    """`section.key=value` strings (value read as YAML) -> {section: {key: value}}."""
    out: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not key:
            raise BenchError(f"--set {item!r}: expected section.key=value")
        out.setdefault(section, {})[key] = yaml.safe_load(value)
    return out


def apply_overrides(params: dict, overrides: dict, source: str = "overrides") -> dict:
    """A copy of `params` with `overrides` ({section: {key: value}}) set key by key.

    Unknown sections or keys are errors (an override file that drifted from params.yaml must
    not be silently ignored); a mapping value replaces the whole key (e.g. data.columns).
    """
    merged = {section: dict(values) if isinstance(values, dict) else values
              for section, values in params.items()}
    for section, values in (overrides or {}).items():
        if section not in merged or not isinstance(merged[section], dict):
            raise BenchError(f"{source}: unknown params section {section!r}")
        if not isinstance(values, dict):
            raise BenchError(f"{source}: section {section!r} must be a mapping of keys")
        for key, value in values.items():
            if key not in merged[section]:
                raise BenchError(f"{source}: unknown key {section}.{key} (not in params.yaml)")
            merged[section][key] = value
    return merged


def resolve_data_paths(params: dict, project: Path = REPO_ROOT) -> dict:
    """Make data.path / data.timestamps_path absolute so they hold in a workspace elsewhere.

    Override files write shared datasets as `../shared/data/...` (relative to the project
    root, as in a main checkout); a worktree finds them one level further up. Paths inside
    the project (data/raw) stay relative: the workspace has its own copy.
    """
    data = params["data"]
    for key in PATH_KEYS:
        value = data.get(key)
        if not value or Path(value).is_absolute() or not value.startswith(".."):
            continue  # inside the project: the workspace holds its own copy
        candidate = project / value
        if not candidate.exists() and value.startswith(SHARED_PREFIX):
            candidate = shared_data_dir() / value[len(SHARED_PREFIX):]
        if candidate.exists():
            data[key] = str(candidate.resolve())
    return params


def load_overrides(dataset: str) -> dict:
    """The dataset's override file, bench/params/<dataset>.yaml; the Amazon sets share
    bench/params/amazon.yaml and differ only in where their data lie (`AMAZON_DATA`), the
    session samples bench/params/sessions.yaml (`SESSION_DATA`)."""
    if dataset in AMAZON_DATA:
        overrides = yaml.safe_load((PARAMS_DIR / "amazon.yaml").read_text()) or {}
        path, catalog = AMAZON_DATA[dataset]
        overrides.setdefault("data", {}).update(path=path, catalog_path=catalog)
        return overrides
    if dataset in SESSION_DATA:
        overrides = yaml.safe_load((PARAMS_DIR / "sessions.yaml").read_text()) or {}
        source, path = SESSION_DATA[dataset]
        overrides.setdefault("data", {}).update(source=source, path=path)
        return overrides
    path = PARAMS_DIR / f"{dataset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise BenchError(f"{path}: no override file for dataset {dataset!r} (known: {known})")
    return yaml.safe_load(path.read_text()) or {}


def project_files(project: Path = REPO_ROOT) -> list[str]:
    """Source files of the checkout: tracked plus untracked-but-not-ignored (bench/work too)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=project, capture_output=True, check=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p and not p.startswith("bench/work/")]


def make_workspace(dest: Path, params: dict, project: Path = REPO_ROOT) -> Path:
    """Copy the project's source files into a fresh `dest`, write `params`, `git init`."""
    if dest.exists():
        shutil.rmtree(dest)
    for name in project_files(project):
        source = project / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def workspace_env(workspace: Path) -> dict[str, str]:
    """The workspace's code on PYTHONPATH, this venv's tools first on PATH, local MLflow."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(workspace)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["SEQREC_HOME"] = str(workspace)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return env


def run_repro(workspace: Path, log_path: Path, timeout_s: float = DEFAULT_TIMEOUT_S,
              args: tuple[str, ...] = ()) -> dict:
    """`dvc repro` in the workspace; the wall time of each stage from its 'Running stage' line."""
    argv = [str(Path(sys.executable).parent / "dvc"), "repro", *args]
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=workspace, env=workspace_env(workspace),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            match = STAGE_LINE.search(line)
            if match:
                marks.append((match.group(1), time.perf_counter() - start))
            if time.perf_counter() - start > timeout_s:
                proc.kill()
        proc.wait()
    total_s = time.perf_counter() - start
    ends = [t for _, t in marks[1:]] + [total_s]
    stages = {name: round(end - begin, 1) for (name, begin), end in zip(marks, ends, strict=True)}
    return {"returncode": proc.returncode, "total_s": round(total_s, 1), "stage_s": stages}


def read_log(path: Path) -> list[dict]:
    """A training log CSV as rows of floats (empty cells as None)."""
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def comparison_rows(dataset: str, eval_metrics: dict) -> list[dict]:
    """Ours (model, scratch ablation, baselines) then the published rows, NDCG/HR@10, with
    validation NDCG@10 beside test where the evaluation has it."""
    validation = eval_metrics.get("validation", {})

    def val(name: str) -> dict:
        value = validation.get(name, {}).get("ndcg@10")
        return {"val ndcg@10": value} if validation else {}

    rows = [{"model": "ours: pretrained + finetuned", "source": "measured",
             **{m: eval_metrics["model"].get(m) for m in METRICS}, **val("model")}]
    for name, values in eval_metrics.get("baselines", {}).items():
        label = "ours: from scratch" if name == "transformer_scratch" else f"baseline: {name}"
        rows.append({"model": label, "source": "measured", **{m: values.get(m) for m in METRICS},
                     **val(name)})
    for name, (hr, ndcg) in PUBLISHED.get(dataset, {}).items():
        rows.append({"model": name, "source": "published", "ndcg@10": ndcg, "hr@10": hr})
    return rows


def run_quality(dataset: str, sets: list[str], timeout_s: float, keep: bool,
                name: str) -> dict:
    """Build the workspace, run the pipeline, collect the results (see the module docstring)."""
    overrides = load_overrides(dataset)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params = apply_overrides(params, overrides, source=f"bench/params/{dataset}.yaml")
    params = apply_overrides(params, parse_set(sets), source="--set")
    as_written = copy.deepcopy(params)  # recorded with paths relative to the project root
    params = resolve_data_paths(params)
    workspace = make_workspace(WORK_DIR / name, params)
    log_path = WORK_DIR / f"{name}.log"
    info = machine()
    print(f"quality {dataset}: workspace {workspace}, log {log_path}, "
          f"load {info['load_avg_start']}")
    repro = run_repro(workspace, log_path, timeout_s)
    if repro["returncode"] != 0:
        tail = log_path.read_text().splitlines()[-5:]
        raise BenchError(f"{workspace}: dvc repro exited {repro['returncode']}: {' | '.join(tail)}")
    result = {"dataset": dataset, "machine": info, "overrides": overrides,
              "sets": parse_set(sets), "params": as_written, "repro": repro,
              **collect(workspace, dataset)}
    print_quality(result)
    if not keep:
        shutil.rmtree(workspace, ignore_errors=True)
    return result


def _maybe_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(workspace: Path, dataset: str) -> dict:
    """What a finished pipeline run left in `workspace`: metrics, curves, training summaries."""
    training = {}
    for name in ("pretrained", "finetuned", "scratch"):
        summary = _maybe_json(workspace / "models" / name / "training.json") or {}
        training[name] = {key: summary.get(key) for key in TRAINING_KEYS}
    return {
        "eval": json.loads((workspace / "reports" / "eval.json").read_text()),
        "sequences": _maybe_json(workspace / "data" / "sequences" / "stats.json"),
        "finetune_log": read_log(workspace / "metrics" / "finetune_log.csv"),
        "scratch_log": read_log(workspace / "metrics" / "scratch_log.csv"),
        "training": training,
        "bar_ndcg@10": QUALITY_BAR_NDCG10.get(dataset),
        "published": {k: {"hr@10": v[0], "ndcg@10": v[1]} for k, v in
                      PUBLISHED.get(dataset, {}).items()},
    }


def seed_row(seed: int, eval_metrics: dict) -> dict:
    """One seed's NDCG@10 of every recommender on test and validation."""
    blocks = {"model": eval_metrics["model"], **eval_metrics.get("baselines", {})}
    return {"seed": seed, "test": {n: b.get("ndcg@10") for n, b in blocks.items()},
            "val": {n: b.get("ndcg@10") for n, b in eval_metrics.get("validation", {}).items()}}


def spread_rows(result: dict) -> list[dict]:
    """Mean and sample standard deviation over the seeds, per recommender."""
    import statistics

    seeds = result["seeds"]
    rows = []
    for name in seeds[0]["test"]:
        test = [s["test"][name] for s in seeds if s["test"].get(name) is not None]
        val = [s["val"][name] for s in seeds if s["val"].get(name) is not None]
        rows.append({"recommender": name, "test mean": statistics.fmean(test),
                     "test std": statistics.stdev(test) if len(test) > 1 else 0.0,
                     "val mean": statistics.fmean(val) if val else None,
                     "val std": statistics.stdev(val) if len(val) > 1 else None,
                     "seeds": len(test)})
    return rows


def print_quality(result: dict) -> None:
    """Print the comparison, the bar and the stage times of one quality result."""
    dataset = result["dataset"]
    print_table(comparison_rows(dataset, result["eval"]),
                ["model", "source", *METRICS, "val ndcg@10"],
                title=f"{dataset}: test split, full ranking")
    if result.get("seeds"):
        print_table(spread_rows(result), ["recommender", "test mean", "test std", "val mean",
                                          "val std", "seeds"],
                    title=f"{dataset}: NDCG@10 over {len(result['seeds'])} training seeds")
    bar = result.get("bar_ndcg@10")
    if bar is not None:
        ours = result["eval"]["model"]["ndcg@10"]
        verdict = "meets" if ours >= bar else "misses"
        print(f"bar NDCG@10 >= {bar}: ours {ours:.4f} {verdict} it")
    stages = [{"stage": k, "wall_s": v} for k, v in result["repro"]["stage_s"].items()]
    print_table(stages, ["stage", "wall_s"], title=f"wall time per stage (load {load_average()})")
