"""`python -m pipeline data`: registry, argument parsing and errors. Never touches the network."""

from __future__ import annotations

import pytest

from pipeline.cli import build_parser
from pipeline.ingest import datasets
from pipeline.params import DataParams
from tests.conftest import run_cli


def test_registry_entries_are_fetchable_or_explain_why_not():
    sources = DataParams.model_fields["source"].annotation.__args__
    for name, dataset in datasets.DATASETS.items():
        assert dataset.source in sources, name
        if dataset.manual is None:
            assert dataset.files and all(f.url.startswith("https://") for f in dataset.files)
        else:
            assert not dataset.files and len(dataset.manual) > 40


def test_parser_reads_name_and_destination():
    args = build_parser("data").parse_args(["data", "download", "amazon-toys", "--dest", "x"])
    assert (args.action, args.name, str(args.dest)) == ("download", "amazon-toys", "x")


def test_unknown_name_is_a_clear_error_listing_the_known_ones():
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'amazon-toyz'.*amazon-toys"):
        datasets.download("amazon-toyz", dest=None)


@pytest.mark.parametrize(("name", "why"), [("taobao", "login"), ("retailrocket", "Kaggle")])
def test_manual_datasets_say_how_to_get_them(tmp_path, name, why):
    with pytest.raises(datasets.DatasetError, match=why):
        datasets.download(name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_list_and_unknown_name(tmp_path):
    listed = run_cli("data", "list", cwd=tmp_path).stdout
    assert "amazon-toys" in listed and "manual" in listed
    proc = run_cli("data", "download", "nope", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: unknown dataset 'nope'")
