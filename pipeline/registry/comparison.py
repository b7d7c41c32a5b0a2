"""Side-by-side numbers for `reproduce` and `registry diff`: metrics, output hashes, tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class MetricRow:
    metric: str
    before: float | None
    after: float | None
    delta: float | None
    within: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def numbers(section: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a nested mapping, keyed `a.b.c` (booleans are not numbers)."""
    found: dict[str, float] = {}
    if isinstance(section, dict):
        for key, value in section.items():
            found.update(numbers(value, f"{prefix}{key}."))
    elif isinstance(section, int | float) and not isinstance(section, bool):
        found[prefix.rstrip(".")] = float(section)
    return found


def metric_rows(
    before: dict[str, float], after: dict[str, float], names: list[str] | None = None,
    tolerance: float | None = None,
) -> list[MetricRow]:
    """One row per metric in `names` (default: every metric on either side, in order)."""
    if names is None:
        names = list(before) + [name for name in after if name not in before]
    rows = []
    for name in names:
        old, new = before.get(name), after.get(name)
        delta = new - old if old is not None and new is not None else None
        within = None
        if tolerance is not None:
            within = delta is not None and abs(delta) <= tolerance
        rows.append(MetricRow(name, old, new, delta, within))
    return rows


def lock_outputs(lock_text: str | None) -> dict[tuple[str, str], str]:
    """(stage, output path) -> md5 from a `dvc.lock`."""
    lock = yaml.safe_load(lock_text or "") or {}
    found = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            if out.get("md5"):
                found[(stage, str(out["path"]))] = str(out["md5"])
    return found


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) >= 1:
        return str(int(value))
    return f"{value:.6g}"


def fmt_delta(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:+.3g}"


def table(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A plain aligned text table, or a markdown one."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def render(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([render(headers), render(["-" * w for w in widths]), *map(render, rows)])
