"""requirements.lock: complete for pyproject's dependencies, hashed, and what is installed."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import lock_requirements  # noqa: E402

LOCK = REPO_ROOT / "requirements.lock"
PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==([^\s\\]+) \\\n    --hash=sha256:([0-9a-f]{64})$",
                 re.MULTILINE)


def locked() -> dict[str, str]:
    text = LOCK.read_text()
    pins = {canonicalize_name(name): version for name, version, _ in PIN.findall(text)}
    entries = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(entries) == len(pins), "every entry is `name==version` with one sha256 hash"
    return pins


def test_every_declared_dependency_is_pinned_and_satisfied_by_its_pin():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = locked()
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock: make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{name}=={pins[name]} breaks pyproject's {requirement.specifier}: make lock"


def test_the_installed_environment_is_the_lock():
    for name, version in locked().items():
        installed = importlib.metadata.version(name)
        # A local build of the same release (torch 2.13.0+cpu, or +cu128) satisfies the pin.
        assert installed.split("+")[0] == version, f"{name}: {installed} != lock {version}"


def test_lock_names_no_machine_path_and_torch_without_local_label():
    text = LOCK.read_text()
    assert "file:" not in text and "/opt/" not in text and "/home/" not in text
    assert locked()["torch"] == "2.13.0"


def test_lock_rendering_from_a_pip_report(tmp_path):
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    report = {"install": [
        {"metadata": {"name": "Torch", "version": "2.13.0+cpu"},
         "download_info": {"url": wheel.as_uri(), "archive_info": {}}},
        {"metadata": {"name": "pyyaml", "version": "6.0.2"},
         "download_info": {"url": "https://files.example/pyyaml.whl",
                           "archive_info": {"hashes": {"sha256": "ab" * 32}}}},
        {"metadata": {"name": "seqrec", "version": "0.1.0"},
         "download_info": {"url": "file:///x", "dir_info": {"editable": True}}},
    ]}
    text = lock_requirements.render(lock_requirements.pins(report), "dev")
    assert "seqrec" not in text.split("\n", 4)[-1]  # the project itself is not locked
    assert f"pyyaml==6.0.2 \\\n    --hash=sha256:{'ab' * 32}" in text
    digest = lock_requirements.file_sha256(wheel.as_uri())
    assert f"torch==2.13.0 \\\n    --hash=sha256:{digest}" in text
