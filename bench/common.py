"""Shared helpers of the benchmark suite: machine description, result files, tables.

Every suite writes one JSON file `bench/results/<name>.json` holding `machine` (what ran it),
`command` (how to rerun it) and its measurements; `python -m bench report` turns those files
into docs/benchmarks.md. Timings are reported beside a baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BYTES_PER_GIB = 1024**3
KIB_PER_MIB = 1024


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's guess elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    """Total physical memory in GiB (None where sysconf cannot tell)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / BYTES_PER_GIB, 1)
    except (ValueError, OSError, AttributeError):
        return None


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (how busy the shared machine was)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _version(module: str) -> str | None:
    try:
        return metadata.version(module.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def machine(extra_modules: tuple[str, ...] = ()) -> dict:
    """What the numbers were measured on: CPU, cores, RAM, versions, load at the start.

    `extra_modules`: more packages whose versions matter to the suite (pyarrow, mlflow, ...).
    """
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "platform": platform.platform(),
        "load_avg_start": load_average(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    for module in extra_modules:
        info[module] = _version(module)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), MiB (Linux KiB)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / KIB_PER_MIB


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces this run, as typed from the repository root.

    `argv`: the suite's arguments after `python -m bench` (default: this process's own,
    whether it was started as `python -m bench ...` or as `python bench/<script>.py ...`).
    """
    if argv is not None:
        return shlex.join(["python", "-m", "bench", *argv])
    script = Path(sys.argv[0]).resolve()
    if script.name == "__main__.py" and script.parent.name == "bench":
        return shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *sys.argv[1:]])


def write_result(name: str, result: dict, out: Path | None = None) -> Path:
    """Write `result` (with machine and command added when absent) to bench/results/<name>.json."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.setdefault("suite", name)
    result.setdefault("machine", machine())
    result.setdefault("command", command_line())
    result["load_avg_end"] = load_average()
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def fmt(value) -> str:
    """A table cell: ints with thousands separators, floats to 4 significant digits, None as -."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[dict], columns: list[str], markdown: bool = False) -> str:
    """Rows as an aligned text table (or a Markdown table)."""
    cells = [[fmt(row.get(col)) for col in columns] for row in rows]
    if markdown:
        head = "| " + " | ".join(columns) + " |"
        rule = "| " + " | ".join("---" for _ in columns) + " |"
        return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in cells)])
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    """Print rows as an aligned table, with an optional title line."""
    if title:
        print(f"\n{title}")
    print(table(rows, columns))
