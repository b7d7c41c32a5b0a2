"""The benchmark suite's own logic: override application and the report page (fast, no runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.quality import (
    BenchError,
    apply_overrides,
    load_overrides,
    parse_set,
    resolve_data_paths,
    shared_data_dir,
)
from pipeline.params import parse_params
from tests.conftest import REPO_ROOT

QUALITY_FIXTURE = {
    "dataset": "toys",
    "command": "python -m bench quality --dataset toys --set trainer.cpu_threads=1",
    "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 8.0, "python": "3.11",
                "load_avg_start": [1.0, 1.0, 1.0]},
    "load_avg_end": [2.0, 1.5, 1.0],
    "sets": {"trainer": {"cpu_threads": 1}},
    "repro": {"returncode": 0, "total_s": 100.0,
              "stage_s": {"ingest": 5.0, "pretrain": 60.0, "evaluate": 35.0}},
    "eval": {"model": {"ndcg@10": 0.0512, "hr@10": 0.09},
             "baselines": {"transformer_scratch": {"ndcg@10": 0.0401, "hr@10": 0.07},
                           "popularity": {"ndcg@10": 0.006, "hr@10": 0.011}}},
    "sequences": {"users": 19412, "items": 11924},
    "finetune_log": [{"epoch": 0.0, "val_ndcg@10": 0.03}, {"epoch": 1.0, "val_ndcg@10": 0.05}],
    "scratch_log": [{"epoch": 0.0, "val_ndcg@10": 0.01}, {"epoch": 1.0, "val_ndcg@10": 0.04}],
    "bar_ndcg@10": 0.058,
    "published": {"eSASRec": {"hr@10": 0.0939, "ndcg@10": 0.0538}},
}
SEQUENCES_FIXTURE = {
    "command": "python -m bench sequences --events 1000000",
    "machine": {"cpu": "Test CPU", "cores": 2},
    "runs": [{"events": 1_000_000, "build": {"total_s": 8.0, "peak_rss_mib": 600.0},
              "baseline_sort": {"total_s": 2.0, "peak_rss_mib": 300.0}}],
}


def test_overrides_set_only_their_keys_and_reject_drifted_ones():
    params = {"data": {"source": "synthetic", "path": "data/raw"}, "model": {"dropout": 0.2}}
    merged = apply_overrides(params, {"data": {"source": "sasrec"}})
    assert merged == {"data": {"source": "sasrec", "path": "data/raw"}, "model": {"dropout": 0.2}}
    assert params["data"]["source"] == "synthetic"  # the input is not modified
    with pytest.raises(BenchError, match=r"unknown key data\.nope"):
        apply_overrides(params, {"data": {"nope": 1}})
    with pytest.raises(BenchError, match="unknown params section 'modle'"):
        apply_overrides(params, {"modle": {"dropout": 0.5}})
    assert parse_set(["trainer.cpu_threads=1", "finetune.lr=0.001"]) == {
        "trainer": {"cpu_threads": 1}, "finetune": {"lr": 0.001}}
    with pytest.raises(BenchError, match="section.key=value"):
        parse_set(["cpu_threads=1"])


@pytest.mark.parametrize(
    "dataset", ["toys", "sports", "taobao", "diginetica", "yoochoose", "synthetic", "tiny"])
def test_every_override_file_applies_to_the_current_params(dataset):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    merged = resolve_data_paths(apply_overrides(params, load_overrides(dataset)))
    parse_params(merged)  # the project's own typed check: no drifted key or wrong type
    if dataset not in ("synthetic", "tiny"):
        keys = ["path", "catalog_path"] if dataset in ("toys", "sports") else ["path"]
        for key in keys:
            resolved = Path(merged["data"][key])
            if shared_data_dir().is_dir():  # where the bench itself looks
                assert resolved.is_absolute() and resolved.exists()
            else:  # a checkout without ../shared/data: nothing to resolve to, left as written
                assert merged["data"][key].startswith("../shared/data/")
    else:
        assert merged["data"]["path"] == params["data"]["path"]  # in-project paths stay relative


def test_the_amazon_sets_share_one_recipe_and_differ_only_in_their_data():
    toys, sports = load_overrides("toys"), load_overrides("sports")
    assert {k: v for k, v in toys.items() if k != "data"} == \
        {k: v for k, v in sports.items() if k != "data"}
    assert set(toys["data"]) == {"source", "path", "catalog_path"}
    assert toys["data"]["path"] != sports["data"]["path"]


def test_the_session_samples_share_one_recipe_and_differ_only_in_their_data():
    diginetica, yoochoose = load_overrides("diginetica"), load_overrides("yoochoose")
    assert {k: v for k, v in diginetica.items() if k != "data"} == \
        {k: v for k, v in yoochoose.items() if k != "data"}
    assert set(diginetica["data"]) == {"source", "path"}
    assert (diginetica["data"]["source"], yoochoose["data"]["source"]) == \
        ("diginetica", "yoochoose")


def test_report_renders_tables_plots_and_to_run_rows(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality_toys.json").write_text(json.dumps(QUALITY_FIXTURE))
    retry = {**QUALITY_FIXTURE, "command": QUALITY_FIXTURE["command"] + " --tag retry"}
    (results / "quality_toys_retry.json").write_text(json.dumps(retry))
    (results / "sequences.json").write_text(json.dumps(SEQUENCES_FIXTURE))
    out, img = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "report", "--results", str(results), "--out", str(out),
         "--img", str(img)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "| ours: pretrained + finetuned | measured | 0.0512 | 0.09 |" in text
    assert "| eSASRec | published | 0.0538 | 0.0939 |" in text
    assert "ours 0.0512 **misses** it" in text
    assert "(+0.0111)" in text  # pretrained vs scratch gain
    assert QUALITY_FIXTURE["command"] in text
    assert text.index("### toys\n") < text.index("### toys_retry\n")  # recipe run first
    assert "--tag retry" in text
    assert "| build_sequences | 1,000,000 | 8 | 600 | numpy lexsort | 2 | 4 |" in text
    assert "build_sequences at 10,000,000 events: to run" in text
    assert "build_sequences at 1,000,000 events: to run" not in text
    assert "To run: `nice -n 5 python -m bench quality --dataset sports`" in text
    assert "| Test CPU |" in text
    for name in ("bench_quality.png", "bench_val_curves.png", "bench_scaling.png"):
        assert (img / name).stat().st_size > 0
        assert f"](img/{name})" in text
