import json

import pytest
import yaml

from pipeline.params import ParamsError, load_params, params_schema, parse_params
from tests.conftest import REPO_ROOT, run_cli


def test_repo_params_load_and_every_key_is_commented():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "synthetic"
    for line in (REPO_ROOT / "params.yaml").read_text().splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if indent != 2 or not stripped or stripped.startswith("#"):
            continue  # only the keys of a section are params; map entries are values
        key = stripped.partition(":")[0]
        assert "# (" in line, f"params.yaml key {key!r} lacks a `# (type) meaning` comment"


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ParamsError, match=r"finetune\.lrr"):
        parse_params({"finetune": {"lrr": 0.1}})


def test_unknown_section_is_an_error_naming_it():
    with pytest.raises(ParamsError, match="finetun"):
        parse_params({"finetun": {}})


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ParamsError, match=r"model\.hidden_dim"):
        parse_params({"model": {"hidden_dim": "wide"}})


def test_params_are_frozen():
    params = parse_params({})
    with pytest.raises(Exception, match="frozen"):
        params.model.hidden_dim = 3


def test_event_type_map_must_target_known_types():
    with pytest.raises(ParamsError, match="event_type_map"):
        parse_params({"data": {"event_type_map": {"addtocart": "basket"}}})


def test_bad_yaml_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(path)


def test_schema_names_every_section():
    schema = params_schema()
    assert {"data", "validate", "sequences", "model", "finetune", "gate"} <= set(
        schema["properties"]
    )


def test_cli_help_lists_stages_and_schema_prints(tmp_path):
    help_text = run_cli("--help", cwd=REPO_ROOT).stdout
    for command in ("ingest", "validate", "build-sequences", "pretrain", "finetune", "evaluate"):
        assert command in help_text
    schema = json.loads(run_cli("params", "--schema", cwd=REPO_ROOT).stdout)
    assert "properties" in schema


def test_cli_reports_bad_params_in_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"model": {"n_layers": "two"}}))
    proc = run_cli("--params", str(bad), "params", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "model.n_layers" in proc.stderr
    assert "Traceback" not in proc.stderr
