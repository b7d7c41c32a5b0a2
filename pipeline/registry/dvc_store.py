"""DVC seen from the registry: which remote holds a run's data, pushing it, restoring it.

Anything that moves data goes through DVC's own command line (`python -m dvc`, the DVC this
environment runs the pipeline with), so every remote type DVC knows works the same way: the
local folder of the default setup, or S3 with its endpoint in `.dvc/config` and credentials
from the environment. DVC's Python API is used only to read settings and the local cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import RegistryError

DVC_FILE_SUFFIX = ".dvc"
# A failing DVC command's last lines are enough to act on; the whole output is in the log.
ERROR_TAIL_LINES = 3


@dataclass(frozen=True)
class Remote:
    """A DVC remote: its name in the config and its URL (a local path made absolute)."""

    name: str
    url: str


def is_dvc_project(root: Path) -> bool:
    return (root / ".dvc").is_dir()


def remotes(root: Path) -> dict[str, str]:
    """name -> URL of every remote configured for the project at `root`.

    DVC resolves a relative local URL (the default `../.dvc-remote`) against the config file
    that holds it, so the URL printed here means the same folder wherever it is read.
    """
    if not is_dvc_project(root):
        return {}
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {name: str(conf["url"]) for name, conf in repo.config["remote"].items()}


def default_remote(root: Path) -> Remote | None:
    """The remote `dvc push` uses at `root` (`core.remote`), or None when none is set."""
    if not is_dvc_project(root):
        return None
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            name = repo.config["core"].get("remote")
            if not name or name not in repo.config["remote"]:
                return None
            return Remote(name, str(repo.config["remote"][name]["url"]))
    except DvcException as exc:
        raise RegistryError(f"{root / '.dvc'}: DVC cannot read its config: {exc}") from None


def run_dvc(
    root: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `root`; with `check`, a failure is a RegistryError quoting DVC's last lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise RegistryError(f"{root}: dvc {' '.join(args)} failed: {error_tail(proc)}")
    return proc


def error_tail(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    return " | ".join(lines[-ERROR_TAIL_LINES:]) or f"exit code {proc.returncode}"


def input_paths(params: Any) -> list[str]:
    """Data a run reads that no stage writes: the `${...}` deps of dvc.yaml's first stages."""
    paths = [
        params.data.path,
        params.data.timestamps_path,
        params.validate_.previous_summary,
        params.sequences.previous_vocab,
        params.retrain.init_from,  # the warm start's model folder (and the drift reference)
    ]
    return [path for path in paths if path]


def dvc_file_for(root: Path, rel: str) -> Path | None:
    """The `.dvc` file tracking `rel` or a folder above it, if any."""
    parts = Path(rel).parts
    for depth in range(len(parts), 0, -1):
        candidate = root.joinpath(*parts[:depth]).with_name(parts[depth - 1] + DVC_FILE_SUFFIX)
        if candidate.is_file():
            return candidate
    return None


def _git_tracked(root: Path, rels: list[str]) -> set[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *rels], cwd=root, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()  # not a git checkout: nothing is tracked by git
    return {name for name in out.decode().split("\0") if name}


def git_tracks_files(root: Path) -> bool:
    """Whether `root` is (inside) a git checkout tracking its files; a DAG workspace is not."""
    return bool(_git_tracked(root, ["."]))


def untracked_inputs(root: Path, params: Any) -> list[str]:
    """Input files neither git nor a `.dvc` file records: a rebuild could not restore them."""
    rels = [rel for rel in input_paths(params) if (root / rel).exists()]
    tracked = _git_tracked(root, rels)
    missing: list[str] = []
    for rel in rels:
        if dvc_file_for(root, rel) is not None:
            continue
        path = root / rel
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        missing += [
            name for name in (f.relative_to(root).as_posix() for f in files) if name not in tracked
        ]
    return missing


def track_inputs(root: Path, params: Any) -> list[str]:
    """`dvc add` the inputs no `.dvc` file tracks yet (a DAG workspace: no git); returns them."""
    rels = [
        rel for rel in input_paths(params)
        if (root / rel).exists() and dvc_file_for(root, rel) is None
    ]
    if rels:
        run_dvc(root, "add", "--quiet", *rels)
    return rels


def dvc_files(root: Path, params: Any) -> list[str]:
    """The `.dvc` files a run depends on: those git tracks, and those of its inputs."""
    found = {name for name in _git_tracked(root, ["*" + DVC_FILE_SUFFIX])}
    for rel in input_paths(params):
        dvc_file = dvc_file_for(root, rel)
        if dvc_file is not None:
            found.add(dvc_file.relative_to(root).as_posix())
    return sorted(found)


def use_remote(root: Path, remote: Remote) -> None:
    """Make `remote` the default remote of the checkout at `root`, in its `config.local`.

    A remote of the same name keeps its other settings (an S3 endpoint, say) and only its
    URL changes; an unknown name is added.
    """
    action = "modify" if remote.name in remotes(root) else "add"
    if action == "modify":
        run_dvc(root, "remote", "modify", "--local", remote.name, "url", remote.url)
    else:
        run_dvc(root, "remote", "add", "--local", remote.name, remote.url)
    run_dvc(root, "remote", "default", "--local", remote.name)


def missing_objects(root: Path, remote_name: str) -> list[tuple[str, str]]:
    """(path, md5) of every cached output or input of the project at `root` that the remote
    lacks, checked in the remote itself before anything is downloaded.

    A folder output is listed file by file (its `.dir` listing is read from the remote), so
    the message can name the very file that is gone.
    """
    from dvc.repo import Repo

    missing: list[tuple[str, str]] = []
    with Repo(str(root)) as repo:
        odb = repo.cloud.get_remote_odb(remote_name, "fetch")
        for out in repo.index.outs:
            if not out.use_cache or not out.hash_info or not out.hash_info.value:
                continue
            oid, path = out.hash_info.value, str(out.def_path)
            if not odb.exists(oid):
                missing.append((path, oid))
            elif out.hash_info.isdir:
                listing = json.loads(odb.fs.cat_file(odb.oid_to_path(oid)))
                files = {entry["md5"]: f"{path}/{entry['relpath']}" for entry in listing}
                present = set(odb.oids_exist(list(files)))
                missing += [(name, md5) for md5, name in files.items() if md5 not in present]
    return missing


def dir_entries(root: Path, oid: str) -> dict[str, str] | None:
    """relative path -> md5 of a folder output, from its `.dir` object in the local cache."""
    if not oid.endswith(".dir"):
        return None
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        path = Path(repo.cache.local.oid_to_path(oid))
    if not path.is_file():
        return None
    return {entry["relpath"]: entry["md5"] for entry in json.loads(path.read_text())}
