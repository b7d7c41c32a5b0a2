"""Packaging: a pyfunc saved from code that answers requests like the model it wraps."""

import json

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from mlflow.exceptions import MlflowException

from pipeline.model.folder import load_model_dir
from pipeline.serving.package import popularity_table
from pipeline.serving.request_encoding import RequestError, encode_requests
from tests.conftest import run_cli
from tests.registry_fixtures import MAX_LEN, make_model_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project with a tiny model folder, packaged by the real CLI."""
    root = tmp_path_factory.mktemp("pkg")
    sequences, model_dir = make_model_dir(root)
    (root / "params.yaml").write_text("registry:\n  max_k: 12\n")
    out = root / "models" / "mlflow_model"
    run_cli(
        "package",
        "--model",
        str(model_dir),
        "--sequences",
        str(sequences),
        "--out",
        str(out),
        cwd=root,
    )
    return root, sequences, model_dir, out


@pytest.fixture(scope="module")
def pyfunc(built):
    return mlflow.pyfunc.load_model(str(built[3]))


def direct_top_k(model_dir, histories, k):
    """Top-k item ids straight from `score_last`, the reference the pyfunc must match."""
    model, _, vocab = load_model_dir(model_dir)
    index = dict(zip(vocab["item_id"], vocab["index"], strict=True))
    item_of = {v: k for k, v in index.items()}
    width = max(len(h) for h in histories)
    items = torch.zeros(len(histories), width, dtype=torch.long)
    types = torch.zeros_like(items)
    for row, history in enumerate(histories):  # reference code: clarity over speed
        items[row, width - len(history) :] = torch.tensor([index[i] for i in history])
        types[row, width - len(history) :] = 1  # view
    logits, _ = model.score_last(items, types)
    return [[item_of[int(i)] for i in row] for row in torch.topk(logits, k).indices]


def test_package_is_code_not_pickle_and_relocatable(built):
    _, _, _, out = built
    mlmodel = (out / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    assert "model_code_path: pyfunc.py" in mlmodel
    assert not list(out.rglob("*.pkl")), "no cloudpickle in the package"
    assert str(built[0]) not in mlmodel, "no absolute build paths in MLmodel"
    assert (out / "code" / "pipeline" / "model" / "transformer.py").is_file()
    assert (out / "artifacts" / "finetuned" / "model.safetensors").is_file()
    reqs = (out / "requirements.txt").read_text()
    assert "mlflow==" in reqs and "torch==" in reqs
    signature = json.loads(mlflow.models.Model.load(str(out)).signature.to_dict()["inputs"])
    assert {c["name"]: c["required"] for c in signature} == {
        "history": True,
        "event_types": False,
        "timestamps": False,
        "k": False,
        "explain": False,
    }


def test_pyfunc_matches_the_model_it_wraps(built, pyfunc):
    histories = [["item1", "item2", "item3"], ["item7"], ["item0", "item4"]]
    out = pyfunc.predict(pd.DataFrame({"history": histories}), params={"k": 5})
    assert [list(items) for items in out["items"]] == direct_top_k(built[2], histories, 5)
    scores = np.stack(out["scores"].to_numpy())
    assert np.all(np.diff(scores, axis=1) <= 0) and np.all((scores > 0) & (scores < 1))
    assert out["purchase_probability"].between(0, 1).all()
    assert not out["fallback"].any() and (out["unknown_items"] == 0).all()


def test_ordinary_bad_input_is_absorbed_and_counted(built, pyfunc):
    long_history = [f"item{i % 12}" for i in range(3 * MAX_LEN)]
    request = pd.DataFrame(
        {
            "history": [["item1", "ghost", "item2", "ghost2"], [], ["ghost"], long_history],
            "event_types": [["view", "cart", "teleport", "view"], [], ["view"], ["view"] * 24],
            "k": [3, 4, 2, 5],
        }
    )
    out = pyfunc.predict(request)
    assert out["unknown_items"].tolist() == [2, 0, 1, 0]
    assert out["unknown_event_types"].tolist() == [1, 0, 0, 0]
    assert [len(items) for items in out["items"]] == [3, 4, 2, 5]
    # Empty or all-unknown history: the most popular training items, in order.
    popular = popularity_table(built[1], 4)["item_ids"]
    assert out["fallback"].tolist() == [False, True, True, False]
    assert list(out["items"][1]) == popular[:4] and list(out["items"][2]) == popular[:2]
    # Over-long history: the same answer as its last max_len events alone.
    tail = pyfunc.predict(pd.DataFrame({"history": [long_history[-MAX_LEN:]], "k": [5]}))
    assert list(out["items"][3]) == list(tail["items"][0])
    # Unknown items are dropped, not replaced: same as the history without them.
    clean = pyfunc.predict(
        pd.DataFrame({"history": [["item1", "item2"]], "event_types": [["view", "view"]], "k": [3]})
    )
    assert list(out["items"][0]) == list(clean["items"][0])


@pytest.mark.parametrize(
    ("request_table", "message"),
    [
        (pd.DataFrame({"items": [["item1"]]}), "missing inputs ['history']"),
        (pd.DataFrame({"history": ["item1"]}), "Expected data to be list"),
        (pd.DataFrame({"history": [["item1"]], "k": [0]}), "row 0: k must be in 1..12, got 0"),
        (pd.DataFrame({"history": [["item1"], ["item2"]], "k": [2, 500]}), "row 1: k must be"),
        (
            pd.DataFrame({"history": [["item1"]], "event_types": [["view", "cart"]]}),
            "row 0: 'event_types' has 2 entries but 'history' has 1",
        ),
    ],
)
def test_malformed_requests_raise_clear_errors(pyfunc, request_table, message):
    with pytest.raises(MlflowException, match=__import__("re").escape(message)):
        pyfunc.predict(request_table)


def test_encoding_left_pads_and_keeps_most_recent_events():
    vocab_ids = pa.array(["a", "b", "c"])
    vocab_index = np.array([3, 4, 5])
    request = pd.DataFrame(
        {
            "history": [["a", "x", "b"], ["c", "c", "a", "b", "c"], []],
            "event_types": [["view", "view", "cart"], None, []],
        }
    )
    batch = encode_requests(request, vocab_ids, vocab_index, ["view", "cart", "purchase"], 1, 3)
    assert batch.items.tolist() == [[0, 3, 4], [3, 4, 5], [0, 0, 0]]  # last 3: a, b, c
    assert batch.types.tolist() == [[0, 1, 2], [1, 1, 1], [0, 0, 0]]
    assert batch.lengths.tolist() == [2, 3, 0] and batch.unknown_items.tolist() == [1, 0, 0]
    with pytest.raises(RequestError, match="row 1: column 'history' must be a list"):
        encode_requests(
            pd.DataFrame({"history": [["a"], "a"]}), vocab_ids, vocab_index, ["view"], 1, 3
        )


def test_int8_variant_is_recorded_quantized_and_scores_like_fp32(built, pyfunc, tmp_path):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from pipeline.serving.variants import package_variant

    root, sequences, model_dir, fp32_out = built
    out = tmp_path / "int8_model"
    run_cli("package", "--model", str(model_dir), "--sequences", str(sequences),
            "--out", str(out), "--variant", "int8", cwd=root)
    assert package_variant(out) == "int8" and package_variant(fp32_out) == "fp32"
    int8 = mlflow.pyfunc.load_model(str(out))
    served = int8.unwrap_python_model().recommender.model
    quantized = [n for n, m in served.named_modules() if isinstance(m, DynamicInt8Linear)]
    assert quantized and all(not n.startswith("encoder") for n in quantized)
    request = pd.DataFrame({"history": [["item1", "item2", "item3"], ["item7"], ["item0"]]})
    for a, b in zip(pyfunc.predict(request, params={"k": 12}).itertuples(),
                    int8.predict(request, params={"k": 12}).itertuples(), strict=True):
        fp32_scores = dict(zip(a.items, a.scores, strict=True))
        int8_scores = dict(zip(b.items, b.scores, strict=True))
        assert max(abs(fp32_scores[i] - int8_scores[i]) for i in fp32_scores) < 0.01


@pytest.mark.slow  # Inductor compiles C++ at load: ~1 CPU minute even for the tiny model
def test_compiled_variant_answers_like_fp32(built, pyfunc):
    """torch.compile changes the kernels, not the numbers (Inductor compiles at load)."""
    compiled = mlflow.pyfunc.load_model(str(built[3]), model_config={"variant": "compiled"})
    served = compiled.unwrap_python_model().recommender
    assert served.variant == "compiled"
    assert hasattr(served.model.score_last, "_torchdynamo_orig_callable")
    request = pd.DataFrame(
        {"history": [["item1", "item2", "item3"], ["item7"], ["item0", "item4"]]})
    want = pyfunc.predict(request, params={"k": 5, "explain": True})
    got = compiled.predict(request, params={"k": 5, "explain": True})
    for a, b in zip(want.itertuples(), got.itertuples(), strict=True):
        assert list(a.items) == list(b.items)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert [e["reason"] for e in a.explanations] == [e["reason"] for e in b.explanations]


def test_package_refuses_to_replace_a_foreign_folder(built, tmp_path):
    root, sequences, model_dir, _ = built
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_cli(
        "package",
        "--model",
        str(model_dir),
        "--sequences",
        str(sequences),
        "--out",
        str(tmp_path),
        cwd=root,
        check=False,
    )
    assert proc.returncode == 1 and "refusing to replace" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture
def keep_torch_threads():
    """The trainer sets torch's thread count (trainer.cpu_threads); give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_package_of_a_trained_model_predicts_the_next_item(
    tmp_path, monkeypatch, keep_torch_threads
):
    """End to end on the real trainer: shoppers walk the catalogue k -> k+1 (tiny_sequences),
    so a trained, packaged model must put item k+1 first after a walk ending at item k."""
    from pipeline.cli import main
    from tests.conftest import use_store
    from tests.tiny_sequences import write_tiny_sequences

    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_tiny_sequences(tmp_path / "data" / "sequences", n_users=200)
    (tmp_path / "params.yaml").write_text(
        "model: {hidden_dim: 16, n_layers: 2, n_heads: 2, dropout: 0.0}\n"
        "finetune: {epochs: 8, batch_size: 16, lr: 0.01, warmup_steps: 2}\n"
        "trainer: {seed: 1, cpu_threads: 1}\nregistry: {max_k: 12}\n"
    )
    finetune = [
        "finetune",
        "--init",
        "scratch",
        "--sequences",
        "data/sequences",
        "--out",
        "models/finetuned",
        "--checkpoints",
        "checkpoints/ft",
        "--log",
        "metrics/log.csv",
    ]
    assert main(finetune) == 0
    package = [
        "package",
        "--model",
        "models/finetuned",
        "--sequences",
        "data/sequences",
        "--out",
        "models/mlflow_model",
    ]
    assert main(package) == 0
    model = mlflow.pyfunc.load_model(str(tmp_path / "models" / "mlflow_model"))
    walks = [[f"item{(start + step) % 12}" for step in range(5)] for start in range(12)]
    out = model.predict(pd.DataFrame({"history": walks}), params={"k": 3})
    firsts = [items[0] for items in out["items"]]
    assert firsts == [f"item{(start + 5) % 12}" for start in range(12)]
