"""Can this model be rebuilt from what is recorded? Checked before a version is registered.

A version is reproducible by construction when:
1. its code is a commit: the checkout has no uncommitted or untracked changes
   (`lineage.git_changes`), so `seqrec.git_sha` is all the code there was;
2. the run is in `dvc.lock` and every data input that no stage writes (`data.path`, the
   previous vocabulary and validation summary) is in git or in a `.dvc` file, so DVC can
   bring it back by its hash;
3. a default DVC remote is configured (its URL becomes `seqrec.dvc_remote`) and the data
   and models are in it (`dvc push`; the DAG pushes before it registers).

Registration refuses a version that fails 1 or 2, or has no remote, unless `--allow-dirty`
(local experiments), and then tags it `seqrec.dirty_allowed=true`. The files needed to rebuild
it travel with the model, under `lineage/` in its LoggedModel (see LINEAGE_FILES).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from pipeline.registry import dvc_store, lineage

LINEAGE_DIR = "lineage"
LOCK_FILE = "dvc.lock"
PARAMS_FILE = "params.yaml"
EVAL_FILE = "eval.json"
GATE_FILE = "gate_report.json"
PATCH_FILE = "git.patch"
DVC_FILES_DIR = "dvc"
LINEAGE_FILES = {
    LOCK_FILE: "the run's dvc.lock: the hash of every input, output and code folder",
    PARAMS_FILE: "the params file the run used (a DAG workspace's differs from the commit's)",
    EVAL_FILE: "reports/eval.json: the metrics a rebuild is compared with",
    GATE_FILE: "the gate report, when one was given",
    DVC_FILES_DIR: "the .dvc files of inputs tracked by DVC (the DAG's landed snapshot)",
    PATCH_FILE: "`git diff HEAD` of a tree registered with --allow-dirty",
}
CHANGES_SHOWN = 3


def problems(root: Path, params: Any, tags: dict[str, str]) -> list[str]:
    """Why a version built at `root` could not be rebuilt exactly; empty when it can."""
    found = []
    if lineage.TAG_GIT_SHA not in tags:
        found.append(f"{root}: not a git checkout, so no commit records the code")
    elif tags.get(lineage.TAG_GIT_DIRTY) == "true":
        changes = lineage.git_changes(root) or []
        shown = ", ".join(line.strip() for line in changes[:CHANGES_SHOWN])
        more = f" and {len(changes) - CHANGES_SHOWN} more" if len(changes) > CHANGES_SHOWN else ""
        found.append(f"{root}: uncommitted changes ({shown}{more})")
    if not (root / LOCK_FILE).is_file():
        found.append(f"{root / LOCK_FILE}: missing (run `dvc repro`)")
    elif lineage.TAG_DVC_REMOTE not in tags:
        found.append(f"{root / '.dvc' / 'config'}: no default DVC remote to hold the data "
                     "(`dvc remote add -d NAME URL`)")
    untracked = dvc_store.untracked_inputs(root, params)
    if untracked:
        found.append(
            f"{untracked[0]}: a pipeline input that neither git nor DVC tracks "
            f"(`dvc add {untracked[0]}`, then commit the .dvc file)"
        )
    return found


def push(root: Path, params: Any) -> None:
    """Put this run's data and models in the DVC remote.

    Outside git (a DAG workspace) the inputs are first given `.dvc` files, so the landed
    snapshot is pushed too; in a checkout that would leave new files, so there an
    untracked input is refused by `problems` instead.
    """
    if not dvc_store.git_tracks_files(root):
        dvc_store.track_inputs(root, params)
    dvc_store.run_dvc(root, "push", "--quiet")


def lineage_files(
    root: Path, params_path: Path, eval_path: Path, gate_report: Path | None, params: Any,
    dirty: bool,
) -> dict[str, bytes]:
    """The files stored with the version under `lineage/` (LINEAGE_FILES)."""
    files: dict[str, bytes] = {PARAMS_FILE: params_path.read_bytes()}
    for name, path in ((LOCK_FILE, root / LOCK_FILE), (EVAL_FILE, eval_path),
                       (GATE_FILE, gate_report)):
        if path is not None and path.is_file():
            files[name] = path.read_bytes()
    for rel in dvc_store.dvc_files(root, params):
        files[f"{DVC_FILES_DIR}/{rel}"] = (root / rel).read_bytes()
    if dirty:
        patch = _git_diff(root)
        if patch:
            files[PATCH_FILE] = patch
    return files


def _git_diff(root: Path) -> bytes:
    try:
        return subprocess.run(
            ["git", "diff", "HEAD", "--binary"], cwd=root, capture_output=True, check=True,
            timeout=lineage.GIT_TIMEOUT_S,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return b""
