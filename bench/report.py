"""`python -m bench report`: docs/benchmarks.md (+ PNGs in docs/img/) from bench/results/*.json.

Only measured numbers are written; a suite or size with no result shows the command that
would produce it ("to run"). Every row names the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench import report_plots
from bench.common import REPO_ROOT, RESULTS_DIR, table
from bench.report_serving import serving_sections

DOC = REPO_ROOT / "docs" / "benchmarks.md"
IMG = REPO_ROOT / "docs" / "img"
SPEED_SIZES = (1_000_000, 10_000_000)
SIZE_TOLERANCE = 0.1  # a run within 10 % of a nominal size counts as that size
QUALITY_DATASETS = ("toys", "sports", "taobao", "diginetica", "yoochoose", "synthetic")
# data-stage suite -> (result file, how to read one run: events, s, MiB, baseline, base s)
SPEED = {
    "generate": "synthetic", "ingest": "ingest", "validate": "validate",
    "build_sequences": "sequences",
}
INTRO = Path(__file__).with_name("report_intro.md")  # static head of the page
NOTES = Path(__file__).with_name("report_notes.md")  # what to keep in mind about these numbers


def _speed_rows(results: dict[str, dict]) -> list[dict]:
    rows = []
    for stage, name in SPEED.items():
        result = results.get(name)
        if not result:
            continue
        for run in result.get("runs") or result.get("sizes") or []:
            if name == "synthetic":
                gen, base = run["generator"], run["baseline"]
                row = (gen["events"], gen["seconds"], gen["peak_rss_mib"], "same table from numpy",
                       base["seconds"])
            elif name == "ingest":
                row = (run["events"], run["clean"]["seconds"], run["clean"]["peak_rss_mib"],
                       "pyarrow read_csv", run["baseline_read_csv"]["seconds"])
            elif name == "validate":
                row = (run["events"], run["validate"]["wall_s"], run["validate"]["peak_rss_mib"],
                       "pandas read + write", run["baseline"]["wall_s"])
            else:
                row = (run["events"], run["build"]["total_s"], run["build"]["peak_rss_mib"],
                       "numpy lexsort", run["baseline_sort"]["total_s"])
            events, seconds, rss, baseline, base_s = row
            rows.append({"stage": stage, "events": events, "seconds": round(seconds, 2),
                         "peak_rss_mib": round(rss), "baseline": baseline,
                         "baseline_s": round(base_s, 2), "ratio": round(seconds / base_s, 1),
                         "command": f"`{result.get('command', 'python -m bench ' + stage)}`"})
    return rows


def _missing_speed(rows: list[dict]) -> list[str]:
    done = {(r["stage"], _bucket(r["events"])) for r in rows}
    suite = {"generate": "generate", "ingest": "ingest", "validate": "validate",
             "build_sequences": "sequences"}
    return [f"- {stage} at {size:,} events: to run, `nice -n 10 python -m bench {suite[stage]} "
            f"--events {size}`" for stage in SPEED for size in SPEED_SIZES
            if (stage, size) not in done]


def _bucket(events: int) -> int:
    """The nominal size a run belongs to (the generator lands near, not on, its target)."""
    near = [size for size in SPEED_SIZES if abs(events - size) <= SIZE_TOLERANCE * size]
    return near[0] if near else events


def _machines(results: dict[str, dict]) -> str:
    rows = []
    for name, result in sorted(results.items()):
        m = result.get("machine", {})
        rows.append({"result": name, "cpu": m.get("cpu") or m.get("processor"),
                     "cores": m.get("cores") or m.get("cpu_count") or m.get("cores_available"),
                     "RAM GiB": m.get("ram_gib") or m.get("memory_gib"),
                     "python": m.get("python"), "torch": m.get("torch"), "numpy": m.get("numpy"),
                     "load at start": m.get("load_avg_start"),
                     "load at end": result.get("load_avg_end")})
    cols = ["result", "cpu", "cores", "RAM GiB", "python", "torch", "numpy", "load at start",
            "load at end"]
    return table(rows, cols, markdown=True)


def _quality_section(quality: dict[str, dict], img: Path, link: str) -> list[str]:
    out = ["## Quality (the real pipeline, `dvc repro`, test split, full ranking)", "",
           "Each dataset runs the whole pipeline in a scratch workspace with params = "
           "params.yaml + `bench/params/<dataset>.yaml` (only the keys that differ). One split "
           "for every model; checkpoints are chosen on validation NDCG@10 only; the test split "
           "is read once by `evaluate`. Published numbers: ../shared/data/README.md "
           "(same protocol: leave-one-out, full ranking, history items excluded).", ""]
    if report_plots.quality_vs_published(quality, img / "bench_quality.png"):
        out += [f"![quality vs published]({link}/bench_quality.png)", ""]
    if report_plots.validation_curves(quality, img / "bench_val_curves.png"):
        out += [f"![validation curves]({link}/bench_val_curves.png)", ""]
    for dataset in QUALITY_DATASETS:
        names = sorted((k for k, v in quality.items() if v.get("dataset", k) == dataset),
                       key=lambda k: (k != dataset, k))  # the recipe's run first, then retries
        if not names:
            out += [f"### {dataset}", "", f"To run: `nice -n 5 python -m bench quality "
                    f"--dataset {dataset}`", ""]
        for name in names:
            out += _quality_run(name, dataset, quality[name])
    return out


def _quality_run(name: str, dataset: str, result: dict) -> list[str]:
    from bench.quality import comparison_rows

    model = result["eval"]["model"]
    out = [f"### {name}", "", f"Command: `{result['command']}`", ""]
    stats = result.get("sequences") or {}
    if stats:
        keys = [k for k in ("users", "items", "events") if k in stats]
        out += [", ".join(f"{k}: {stats[k]:,}" for k in keys), ""]
    out += [table(comparison_rows(dataset, result["eval"]),
                  ["model", "source", "ndcg@10", "hr@10", "val ndcg@10"], markdown=True), ""]
    if result.get("seeds"):
        from bench.quality import spread_rows

        seeds = ", ".join(str(s["seed"]) for s in result["seeds"])
        out += [f"NDCG@10 over training seeds {seeds} (same data; mean and sample std):", "",
                table(spread_rows(result), ["recommender", "test mean", "test std",
                                            "val mean", "val std", "seeds"], markdown=True), ""]
    bar = result.get("bar_ndcg@10")
    if bar is not None:
        verdict = "meets" if model["ndcg@10"] >= bar else "misses"
        out += [f"Bar NDCG@10 >= {bar}: ours {model['ndcg@10']:.4f} **{verdict}** it.", ""]
    scratch = result["eval"].get("baselines", {}).get("transformer_scratch")
    if scratch:
        gain = model["ndcg@10"] - scratch["ndcg@10"]
        out += [f"Pretrained vs from scratch: NDCG@10 {model['ndcg@10']:.4f} vs "
                f"{scratch['ndcg@10']:.4f} ({gain:+.4f}).", ""]
    best = {key: _best_val(result.get(key, [])) for key in ("finetune_log", "scratch_log")}
    out += ["Best validation NDCG@10: pretrained "
            f"{best['finetune_log']}, from scratch {best['scratch_log']}.", ""]
    training = result.get("training")
    if training:
        rows = [{"model": key, **values} for key, values in training.items()]
        shifted = ["gate_shift"] if any(row.get("gate_shift") is not None for row in rows) else []
        out += ["How far training got in its time budget (models/*/training.json):", "",
                table(rows, ["model", "epochs", "train_steps", "wall_seconds",
                             "sequences_per_s", "best_val_ndcg@10", "stopped_early",
                             *shifted], markdown=True), ""]
    load = (result.get("machine", {}).get("load_avg_start"), result.get("load_avg_end"))
    out += [f"Load average (1/5/15 min) at the start {load[0]}, at the end {load[1]} "
            "(2 cores, shared).", ""]
    stages = [{"stage": k, "wall s": v} for k, v in result["repro"]["stage_s"].items()]
    out += [table(stages + [{"stage": "total", "wall s": result["repro"]["total_s"]}],
                  ["stage", "wall s"], markdown=True), ""]
    sets = result.get("sets") or {}
    if sets:
        out += [f"Extra overrides of this run: `{json.dumps(sets)}`", ""]
    return out


def _best_val(log: list[dict]) -> str:
    rows = [r for r in log if r.get("val_ndcg@10") is not None]
    if not rows:
        return "–"
    best = max(rows, key=lambda r: r["val_ndcg@10"])
    return (f"{best['val_ndcg@10']:.4f} (epoch {int(best['epoch'])}, last "
            f"{int(rows[-1]['epoch'])}, 0-based)")


def _other_sections(results: dict[str, dict]) -> list[str]:
    out = ["## Training, evaluation, serving, no-op repro", ""]
    rows = []
    if (r := results.get("training")):
        rows.append({"suite": "training (Lightning vs bare loop)",
                     "measured": f"{r['lightning']['sequences_per_s']} seq/s",
                     "baseline": f"bare PyTorch {r['bare_pytorch']['sequences_per_s']} seq/s",
                     "ratio": f"overhead {r['lightning_overhead_pct']} %",
                     "command": f"`{r.get('command', 'python -m bench training')}`"})
    if (r := results.get("eval")):
        rows.append({"suite": f"eval ({r['users']:,} users x {r['items']:,} items)",
                     "measured": f"{r['model_s']} s wall, {r.get('model_cpu_s', '–')} CPU s "
                                 f"(target <= {r['target_s']} s: "
                                 f"{'met' if r['meets_target'] else 'missed'})",
                     "baseline": f"bare matmul {r['bare_matmul_s']} s",
                     "ratio": f"{r['ratio_model_vs_matmul']}x",
                     "command": f"`{r.get('command', 'python -m bench eval')}`"})
    if (r := results.get("serving")):
        one = r["single_user"]
        rows.append({"suite": "serving, one user top-k",
                     "measured": f"p50 {one['pyfunc']['p50_ms']} ms, p99 "
                                 f"{one['pyfunc']['p99_ms']} ms",
                     "baseline": f"Recommender p50 {one['recommender']['p50_ms']} ms",
                     "ratio": f"{r.get('ratio_pyfunc_vs_recommender_p50', '–')}x",
                     "command": f"`{r.get('command', 'python -m bench serving')}`"})
    if (r := results.get("repro")):
        med = r["median_s"]
        rows.append({"suite": "dvc repro, nothing changed",
                     "measured": f"{med['dvc_repro_noop']:.2f} s (ran a stage: "
                                 f"{r['noop_ran_a_stage']})",
                     "baseline": f"dvc status {med['dvc_status']:.2f} s, python -c pass "
                                 f"{med['python_c_pass']:.2f} s",
                     "ratio": f"{r['ratio_noop_vs_dvc_status']}x status",
                     "command": f"`{r.get('command', 'python -m bench repro')}`"})
    out += [table(rows, ["suite", "measured", "baseline", "ratio", "command"], markdown=True)
            if rows else "No results yet.", ""]
    for name in ("training", "eval", "serving", "repro"):
        if name not in results:
            out.append(f"- {name}: to run, `nice -n 10 python -m bench {name}`")
    return out + [""]


def load_results(folder: Path) -> dict[str, dict]:
    """Every bench/results/*.json by its file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def render(results: dict[str, dict], img: Path, link: str = "img") -> str:
    """The whole Markdown page (plots written into `img`, linked as `link/<name>.png`)."""
    img.mkdir(parents=True, exist_ok=True)
    quality = {k.removeprefix("quality_"): v for k, v in results.items()
               if k.startswith("quality_") and v.get("dataset") in QUALITY_DATASETS}
    out = [INTRO.read_text()]
    if NOTES.is_file():
        out.append(NOTES.read_text())
    out += _quality_section(quality, img, link)
    speed = _speed_rows(results)
    out += ["## Data stages: time and peak RSS", "",
            "Each measurement runs in a fresh subprocess (peak RSS is its own). "
            "ratio = stage / baseline.", ""]
    if report_plots.scaling(speed, img / "bench_scaling.png"):
        out += [f"![scaling]({link}/bench_scaling.png)", ""]
    cols = ["stage", "events", "seconds", "peak_rss_mib", "baseline", "baseline_s", "ratio",
            "command"]
    out += [table(speed, cols, markdown=True) if speed else "No results yet.", ""]
    out += _missing_speed(speed) + [""]
    out += _other_sections(results)
    out += serving_sections(results.get("serving"))
    out += ["## Machines", "", _machines(results), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench report", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--img", type=Path, default=IMG)
    args = parser.parse_args(argv)
    link = Path(os.path.relpath(args.img, args.out.parent)).as_posix()
    text = render(load_results(args.results), args.img, link)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0
