"""Headless Chromium from the system (Debian's `chromium`), driven by Playwright from PyPI.

No browser is downloaded: Playwright launches `SEQREC_CHROMIUM` or the `chromium` on PATH.
Without one the journey fails with how to install it; it never skips in silence.
Screenshots go to `SEQREC_SCREENSHOTS` (relative to the repo root; `make screenshots` sets it
to docs/img) or to the test's tmp folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# Headless in a container: no sandbox, no GPU; no background connections to Google (without
# these, this machine refuses the browser's connections many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
# The UIs answer in well under a second on an idle machine; 2 cores busy training need more.
ACTION_TIMEOUT_MS = 60_000


def chromium_path() -> str:
    found = os.environ.get("SEQREC_CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not found:
        pytest.fail("no Chromium for the browser journeys: `apt-get install -y chromium` "
                    "(Debian; .ci/run does it as root) or set SEQREC_CHROMIUM", pytrace=False)
    return found


def screenshot_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("SEQREC_SCREENSHOTS")
    folder = REPO_ROOT / configured if configured else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def browser_page(tmp_path: Path) -> Iterator:
    """A fresh profile and one page; closed (browser and all) on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium_path(),
            headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT,
        )
        try:
            page = context.new_page()
            page.set_default_timeout(ACTION_TIMEOUT_MS)
            yield page
        finally:
            context.close()
