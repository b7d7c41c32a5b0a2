"""A journey that fails with its servers and browser running; run only by test_cleanup.py.

Not collected by the suite (no `test_` prefix): test_cleanup.py runs it in its own pytest
and checks afterwards that every process it recorded here is gone and the ports are closed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from tests.journeys.browser import browser_page
from tests.journeys.stack import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):  # the same shape as the journeys' own fixtures
    with running_stack(tmp_path_factory.mktemp("failing"), {}) as running:
        yield running


def test_fails_while_everything_runs(stack, tmp_path):
    with browser_page(tmp_path) as page:
        page.goto(stack.mlflow_url)
        processes = [*stack.processes(), *psutil.Process().children(recursive=True)]
        record = {"processes": [[p.pid, p.create_time()] for p in processes],
                  "ports": [stack.api_port, stack.mlflow_port]}
        Path(os.environ["SEQREC_STACK_RECORD"]).write_text(json.dumps(record))
        raise AssertionError("deliberate failure with the servers and the browser running")
