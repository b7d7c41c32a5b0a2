"""The mechanics of `reproduce`: a worktree at the recorded commit, its data back, one re-run.

1. `checkout`: `git worktree add --detach` at `seqrec.git_sha`, in a temporary folder.
2. `write_lineage`: the recorded `params.yaml`, `dvc.lock` and input `.dvc` files over the
   commit's (a DAG workspace's params differ from the commit's); with --allow-dirty the
   recorded `git diff HEAD` is applied too.
3. `restore`: the recorded remote becomes the worktree's default; every output and input the
   lock names is looked up in the remote by its hash (a missing one is an error naming it);
   `dvc fetch` brings them into a cache of the worktree's own (never the project's), then
   `dvc checkout`.
4. `source_changes`: `dvc status` must find every code folder, params and input as recorded.
5. `rerun`: the pipeline again (`reproduce.command`, default `dvc repro --force`), logging to a
   throwaway MLflow store inside the worktree, never to the registry's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.errors import RegistryError
from pipeline.registry import dvc_store, provenance
from pipeline.registry.recorded import RecordedVersion

GIT_TIMEOUT_S = 120
MISSING_SHOWN = 3


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
    )


def checkout(project: Path, sha: str, tree: Path) -> Path:
    """A detached git worktree of the project's repository at `sha`, in `tree`."""
    if _git(project, "rev-parse", "--git-dir").returncode != 0:
        raise RegistryError(f"{project}: not a git checkout; reproduce needs the project's history")
    if _git(project, "cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
        raise RegistryError(
            f"commit {sha} is not in the repository at {project}; fetch it (git fetch) first"
        )
    proc = _git(project, "worktree", "add", "--detach", "--quiet", str(tree), sha)
    if proc.returncode != 0:
        raise RegistryError(f"git worktree add {tree} {sha}: {proc.stderr.strip()}")
    return tree


def remove_checkout(project: Path, tree: Path) -> None:
    if tree.exists():
        _git(project, "worktree", "remove", "--force", str(tree))
    _git(project, "worktree", "prune")


def write_lineage(tree: Path, recorded: RecordedVersion, apply_patch: bool) -> list[str]:
    """Lay the recorded files over the checkout; returns what was written (relative paths)."""
    assert recorded.lineage_dir is not None
    written = []
    for name in (provenance.PARAMS_FILE, provenance.LOCK_FILE):
        source = recorded.file(name)
        if source is None:
            raise RegistryError(f"{recorded.label}: no {name} among its lineage files")
        shutil.copyfile(source, tree / name)
        written.append(name)
    dvc_dir = recorded.lineage_dir / provenance.DVC_FILES_DIR
    for source in sorted(dvc_dir.rglob("*")) if dvc_dir.is_dir() else []:
        if source.is_file():
            rel = source.relative_to(dvc_dir)
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tree / rel)
            written.append(rel.as_posix())
    patch = recorded.file(provenance.PATCH_FILE)
    if apply_patch and patch is not None:
        proc = _git(tree, "apply", "--whitespace=nowarn", str(patch))
        if proc.returncode != 0:
            raise RegistryError(f"{recorded.label}: its recorded git diff does not apply: "
                                f"{proc.stderr.strip()}")
        written.append(provenance.PATCH_FILE)
    # The worktree's DVC never touches git: nothing to stage or ignore in a throwaway copy.
    config_local = tree / ".dvc" / "config.local"
    config_local.write_text("[core]\n    no_scm = true\n")
    return written


def restore(tree: Path, remote: dvc_store.Remote, env: dict[str, str]) -> None:
    """Every recorded output and input back from `remote`, by hash; one line if one is missing."""
    if "://" not in remote.url and not Path(remote.url).is_dir():
        raise RegistryError(
            f"DVC remote {remote.url}: no such folder on this machine; pass --remote URL"
        )
    dvc_store.use_remote(tree, remote)
    missing = dvc_store.missing_objects(tree, remote.name)
    if missing:
        shown = ", ".join(f"{path} (md5 {md5})" for path, md5 in missing[:MISSING_SHOWN])
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise RegistryError(f"DVC remote {remote.url} lacks {shown}{more}")
    fetched = dvc_store.run_dvc(tree, "fetch", env=env, check=False)
    if fetched.returncode != 0:
        raise RegistryError(f"dvc fetch from {remote.url}: {dvc_store.error_tail(fetched)}")
    dvc_store.run_dvc(tree, "checkout", "--quiet", env=env)


def source_changes(tree: Path, env: dict[str, str]) -> list[str]:
    """Code folders, params or inputs that differ from the recorded `dvc.lock`.

    Outputs do not count (a `cache: false` output is never pushed, and the re-run rewrites
    them all); neither do deps that another stage writes.
    """
    proc = dvc_store.run_dvc(tree, "status", "--json", env=env)
    status = json.loads(proc.stdout or "{}")
    from pipeline.registry.comparison import lock_outputs

    produced = {path for _, path in lock_outputs((tree / provenance.LOCK_FILE).read_text())}
    changes = []
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):
                changes.append(f"{stage}: {entry}")
                continue
            for path, state in (entry.get("changed deps") or {}).items():
                if path not in produced:
                    changes.append(f"{stage}: {path} {state}")
    return sorted(set(changes))


def command_env(tree: Path) -> dict[str, str]:
    """The re-run's environment: this Python's tools, the worktree's code, a private store."""
    env = dict(os.environ)
    for name in ("SEQREC_PIPELINE_RUN", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        env.pop(name, None)
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=str(tree),
        SEQREC_HOME=str(tree),
        MLFLOW_TRACKING_URI=f"sqlite:///{tree / 'mlflow.db'}",
        PYTHONDONTWRITEBYTECODE="1",
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    return env


def rerun(tree: Path, command: str, env: dict[str, str], log_path: Path) -> None:
    """Run the pipeline in the worktree; its output goes to `log_path`, stage starts to stdout."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            shlex.split(command), cwd=tree, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip())
            if line.startswith("Running stage"):
                print(f"  {line.strip()}", flush=True)
        proc.wait()
    if proc.returncode != 0:
        tail = " | ".join(line for line in lines[-3:] if line.strip())
        raise RegistryError(f"{command} in {tree} exited {proc.returncode}: {tail} "
                            f"(full output: {log_path})")
