"""`python -m bench repro`: the time of a `dvc repro` with nothing changed.

In a scratch workspace (bench/work/repro: this checkout's source files + `git init`, params =
params.yaml + bench/params/tiny.yaml), one full `dvc repro` runs first (timed per stage);
then, `--repeats` times each, in this order: `python -c pass` (interpreter start, the floor),
`dvc status` (DVC's own check of every stage, the baseline) and `dvc repro` (nothing to run).
Reports the median of each and the ratios no-op repro / dvc status and / python -c pass, and
checks that the no-op repro ran no stage. Writes bench/results/repro.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import REPO_ROOT, machine, print_table, write_result
from bench.quality import (
    WORK_DIR,
    apply_overrides,
    load_overrides,
    make_workspace,
    run_repro,
    workspace_env,
)

UP_TO_DATE_MARKERS = ("Data and pipelines are up to date", "didn't change, skipping")
STAGE_RAN_MARKER = "Running stage"


def timed_s(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of one command and its output (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=workspace_env(cwd), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {cwd} exited {proc.returncode}: "
                         f"{(proc.stdout + proc.stderr)[-1000:]}")
    return seconds, proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench repro", description=__doc__)
    parser.add_argument("--params", default="tiny", help="override file in bench/params")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    args = parser.parse_args(argv)
    info = machine()
    params = apply_overrides(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()),
                             load_overrides(args.params), source=f"bench/params/{args.params}")
    workspace = make_workspace(WORK_DIR / "repro", params)
    dvc = str(Path(sys.executable).parent / "dvc")
    full = run_repro(workspace, WORK_DIR / "repro_full.log")
    if full["returncode"] != 0:
        raise SystemExit(f"{workspace}: the first dvc repro failed (see bench/work/repro_full.log)")
    commands = {"python_c_pass": [sys.executable, "-c", "pass"],
                "dvc_status": [dvc, "status"], "dvc_repro_noop": [dvc, "repro"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    stages_ran = False
    for _ in range(args.repeats):
        for name, command in commands.items():
            seconds, output = timed_s(command, workspace)
            times[name].append(round(seconds, 3))
            if name == "dvc_repro_noop":
                stages_ran |= STAGE_RAN_MARKER in output
                up_to_date = any(marker in output for marker in UP_TO_DATE_MARKERS)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "machine": info, "params": args.params, "repeats": args.repeats,
        "first_repro": full, "times_s": times, "median_s": median,
        "ratio_noop_vs_dvc_status": round(median["dvc_repro_noop"] / median["dvc_status"], 2),
        "ratio_noop_vs_python": round(median["dvc_repro_noop"] / median["python_c_pass"], 1),
        "noop_ran_a_stage": stages_ran, "noop_reported_up_to_date": up_to_date,
    }
    print_table([{"command": k, "median_s": v, "runs_s": times[k]} for k, v in median.items()],
                ["command", "median_s", "runs_s"],
                title=f"dvc repro with nothing changed (first full repro {full['total_s']} s)")
    print(f"no-op repro / dvc status: {result['ratio_noop_vs_dvc_status']}x; "
          f"/ python -c pass: {result['ratio_noop_vs_python']}x; ran a stage: {stages_ran}")
    write_result("repro", result)
    if not args.keep:
        shutil.rmtree(workspace, ignore_errors=True)
    return 1 if stages_ran else 0
