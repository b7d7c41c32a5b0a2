"""The evaluation report: `eval.md` and a self-contained `eval.html` (PNGs embedded).

Order: one summary line (model vs the best baseline, what pretraining buys), then tables
(model vs baselines, purchase head, slices, run details), then the plots.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluation.metrics import N_RESERVED_TOKENS
from pipeline.evaluation.report_plots import (
    RANK_METRICS,
    ks_in,
    plot_metrics_at_k,
    plot_slices,
    plot_training_curves,
    recommenders_in,
    write_csvs,
)

SCRATCH_NAME = "transformer_scratch"
PURCHASE_KEYS = ("purchase_auc", "purchase_logloss", "purchase_examples")
LOWER_IS_BETTER = {"purchase_logloss"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em;line-height:1.45}
h1{margin-bottom:.2em}.summary{font-size:1.1em;background:#f3f6fa;border-left:4px solid #3b6ea5;
padding:.7em 1em;margin:1em 0}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.92em}
th,td{border:1px solid #d4d8dd;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eef1f4}
tr.model td{background:#fbf7e6}img{max-width:100%;border:1px solid #e4e6e8;margin:.4em 0 1.2em}
"""


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _best_baseline(document: dict, key: str) -> tuple[str, float] | None:
    candidates = {
        name: m[key]
        for name, m in document.get("baselines", {}).items()
        if name != SCRATCH_NAME and key in m
    }
    if not candidates:
        return None
    name = max(candidates, key=candidates.get)
    return name, candidates[name]


def _relative(gain: float, base: float) -> str:
    return f" ({gain / base:+.1%})" if base > 0 else ""


def summary_line(document: dict, k: int) -> str:
    """Does the model lead every other recommender? Then vs the best non-transformer baseline,
    and vs the same transformer from scratch (what pretraining buys)."""
    key = f"ndcg@{k}"
    model = document["model"][key]
    others = {name: m[key] for name, m in document.get("baselines", {}).items() if key in m}
    verdict = ""
    if others:
        top = max(others, key=others.get)
        verdict = (" leads every other recommender" if model >= others[top]
                   else f" LOSES to {top} ({others[top]:.4f})")
    parts = [f"Model NDCG@{k} = {model:.4f}{verdict}"]
    best = _best_baseline(document, key)
    if best is not None:
        name, value = best
        gain = model - value
        parts.append(f"best baseline {name} {value:.4f}: {gain:+.4f}{_relative(gain, value)}")
    scratch = document.get("baselines", {}).get(SCRATCH_NAME)
    if scratch is not None:
        value = scratch[key]
        parts.append(
            f"pretraining gain over the same transformer from scratch ({value:.4f}): "
            f"{model - value:+.4f}{_relative(model - value, value)}"
        )
    return "; ".join(parts) + "."


def _bold_best(
    rows: list[list], first_metric_col: int, lower_better_cols: set[int], *, per_row: bool = False
) -> list[list[str]]:
    """Format cells; the best value of each numeric column (or row) is marked **bold**."""
    out = [[fmt(v) for v in row] for row in rows]
    n_cols = len(rows[0]) if rows else 0
    groups = (
        [[(i, c) for c in range(first_metric_col, n_cols)] for i in range(len(rows))]
        if per_row
        else [[(i, c) for i in range(len(rows))] for c in range(first_metric_col, n_cols)]
    )
    for cells in groups:
        values = [(rows[i][c], i, c) for i, c in cells if isinstance(rows[i][c], float)]
        if len(values) > 1:
            lower = not per_row and values[0][2] in lower_better_cols
            best = (min if lower else max)(v for v, _, _ in values)
            for value, i, c in values:
                if value == best:
                    out[i][c] = f"**{out[i][c]}**"
    return out


def build_tables(document: dict, details: dict, k: int) -> list[Table]:
    recommenders = recommenders_in(document)
    ks = ks_in(document["model"])
    keys = [f"{m}@{kk}" for kk in ks for m in RANK_METRICS] + [f"coverage@{k}"]
    overall = [[name, *(m.get(key) for key in keys)] for name, m in recommenders.items()]
    tables = [
        Table(
            f"Model vs baselines ({details['split']} split, "
            f"full ranking over {details['vocab_size'] - N_RESERVED_TOKENS} items)",
            ["recommender", *[key.upper() for key in keys]],
            _bold_best(overall, 1, set()),
            "Ties rank pessimistically; a target unknown to a model counts as a miss.",
        )
    ]
    purchase = [
        [name, *(m.get(key) for key in PURCHASE_KEYS)]
        for name, m in recommenders.items()
        if "purchase_examples" in m
    ]
    if purchase:
        lower = {1 + i for i, key in enumerate(PURCHASE_KEYS) if key in LOWER_IS_BETTER}
        tables.append(
            Table(
                "Purchase head (cart/purchase targets, label = purchase)",
                ["model", "AUC", "log-loss", "examples"],
                _bold_best(purchase, 1, lower),
                "AUC is '–' when the examples hold only one class.",
            )
        )
    slices = document.get("slices", {})
    names = [n for n in recommenders if any(n in s for s in slices.values())]
    for metric in ("ndcg", "hr"):
        rows = [
            [s, block["examples"], *(block.get(n, {}).get(f"{metric}@{k}") for n in names)]
            for s, block in slices.items()
        ]
        if rows:
            tables.append(
                Table(
                    f"Slices: {metric.upper()}@{k}",
                    ["slice", "examples", *names],
                    _bold_best(rows, 2, set(), per_row=True),
                )
            )
    validation = document.get("validation", {})
    if validation:
        key = f"ndcg@{k}"
        rows = [[name, validation.get(name, {}).get(key), m.get(key)]
                for name, m in recommenders.items()]
        tables.insert(1, Table(
            f"Validation vs test NDCG@{k}",
            ["recommender", "validation", "test"],
            _bold_best(rows, 1, set()),
            "Checkpoints are chosen on validation only; the test split is read once, here. "
            "When the two columns rank the recommenders differently, model selection is blind.",
        ))
    if document.get("drift"):
        tables.append(drift_table(document["drift"]))
    run_rows = [
        ["examples", details["examples"]],
        ["exclude_history", details["exclude_history"]],
        ["current items unknown to the model", details.get("unknown_items", 0)],
        *[[f"ranking time {name} (s)", s] for name, s in details["seconds"].items()],
    ]
    tables.append(Table("Run", ["", "value"], [[str(a), fmt(b)] for a, b in run_rows]))
    return tables


def drift_table(drift: dict) -> Table:
    """The drift report (`pipeline.drift.report`): each measure, its bound, crossed or not."""
    from pipeline.drift.report import CHECKS

    if drift.get("reference") is None:
        return Table("Drift against the champion's training data", ["", "value"],
                     [["reference", "none (first training)"]], drift.get("note", ""))
    bounds = drift.get("bounds", {})
    rows = []
    for name, bound_name, _ in CHECKS:
        crossed = any(reason.startswith(f"{name} ") for reason in drift.get("reasons", []))
        rows.append([name, fmt(drift.get(name)), fmt(bounds.get(bound_name)),
                     "**drifted**" if crossed else "ok"])
    verdict = "; ".join(drift["reasons"]) if drift.get("drifted") else "no bound crossed"
    return Table(f"Drift against the champion's training data ({drift['reference']})",
                 ["measure", "value", "bound", "verdict"], rows,
                 f"Jensen-Shannon divergences are base 2 (0 same, 1 disjoint). {verdict}.")


def render_markdown(
    title: str, summary: str, tables: list[Table], images: list[tuple[str, str]]
) -> str:
    lines = [f"# {title}", "", f"**{summary}**", ""]
    for table in tables:
        lines += [
            f"## {table.title}",
            "",
            "| " + " | ".join(table.headers) + " |",
            "|"
            + "|".join(" --- " if i == 0 else " ---: " for i in range(len(table.headers)))
            + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines += (["", f"_{table.note}_"] if table.note else []) + [""]
    if images:
        lines += ["## Plots", ""] + [f"![{caption}]({ref})\n" for caption, ref in images]
    return "\n".join(lines)


def _html_cell(text: str, tag: str) -> str:
    if text.startswith("**") and text.endswith("**"):
        return f"<{tag}><b>{html.escape(text[2:-2])}</b></{tag}>"
    return f"<{tag}>{html.escape(text)}</{tag}>"


def render_html(
    title: str, summary: str, tables: list[Table], images: list[tuple[str, Path]]
) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='summary'>{html.escape(summary)}</p>",
    ]
    for table in tables:
        parts.append(
            f"<h2>{html.escape(table.title)}</h2><table><thead><tr>"
            + "".join(_html_cell(h, "th") for h in table.headers)
            + "</tr></thead><tbody>"
        )
        for row in table.rows:
            css = " class='model'" if row and row[0].strip("*") == "model" else ""
            parts.append(f"<tr{css}>" + "".join(_html_cell(c, "td") for c in row) + "</tr>")
        parts.append("</tbody></table>")
        if table.note:
            parts.append(f"<p><small>{html.escape(table.note)}</small></p>")
    if images:
        parts.append("<h2>Plots</h2>")
    for caption, path in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f"<h3>{html.escape(caption)}</h3><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(
    document: dict,
    details: dict,
    *,
    plots_dir: Path | None,
    report_dir: Path | None,
    training_logs: list[Path],
    report_k: int,
) -> list[Path]:
    """Write the plot CSVs, PNGs and the report; returns every file written."""
    written: list[Path] = []
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        written += write_csvs(document, plots_dir)
    png_dir = (plots_dir if plots_dir is not None else report_dir) / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    images = [("Ranking metrics at k", plot_metrics_at_k(document, png_dir / "metrics_at_k.png"))]
    if document.get("slices"):
        images.append(
            (f"NDCG@{report_k} by slice", plot_slices(document, report_k, png_dir / "slices.png"))
        )
    curves = plot_training_curves(training_logs, png_dir / "training_curves.png")
    if curves is not None:
        images.append(("Training curves (validation NDCG@10, train loss)", curves))
    written += [path for _, path in images]
    if report_dir is None:
        return written
    report_dir.mkdir(parents=True, exist_ok=True)
    title = "seqrec evaluation"
    summary = summary_line(document, report_k)
    tables = build_tables(document, details, report_k)
    if details.get("explained_users"):
        from pipeline.evaluation.explained_users import explained_table

        tables.append(explained_table(details["explained_users"]))
    md_images = [(c, Path(os.path.relpath(p, report_dir)).as_posix()) for c, p in images]
    (report_dir / "eval.md").write_text(
        render_markdown(title, summary, tables, md_images), encoding="utf-8"
    )
    (report_dir / "eval.html").write_text(
        render_html(title, summary, tables, images), encoding="utf-8"
    )
    return [*written, report_dir / "eval.md", report_dir / "eval.html"]
