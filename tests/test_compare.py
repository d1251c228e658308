"""compare: real backends on a tiny random BERT classifier (real tokenizer and sentences)."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from mlfs_edge.assets import minilm_path
from mlfs_edge.cli import main
from mlfs_edge.eval.compare import (
    ROW_KEYS,
    CompareSettings,
    load_source,
    mlfs_unavailable_reason,
    parse_subnets,
    run_compare,
    write_outputs,
)

SUBNET = "depth=1,heads=2,mlp=64"


@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=128, num_labels=2, id2label={0: "neg", 1: "pos"},
                     label2id={"neg": 0, "pos": 1})
    path = tmp_path_factory.mktemp("tiny_cls")
    BertForSequenceClassification(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def compared(tiny_classifier_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("compare")
    settings = CompareSettings(dtypes=("fp32", "int8"), backends=("pytorch", "executorch", "onnxruntime", "mlfs"),
                               threads=(1, 2), latency_runs=2, max_test=40)
    return work, run_compare(tiny_classifier_dir, [SUBNET], work, settings, progress=False)


def test_rows_cover_every_backend_and_dtype_with_measured_values(compared):
    _, rows = compared
    assert all(tuple(r) == ROW_KEYS for r in rows)
    got = {(r["backend"], r["dtype"], r["threads"]) for r in rows}
    backends = ["pytorch", "executorch", "onnxruntime"] + ([] if mlfs_unavailable_reason() else ["mlfs"])
    want = {(b, d, t) for b in backends for d in ("fp32", "int8") for t in (1, 2)}
    assert got == want  # mlfs rows only where the native engine is built (else a reason is printed)
    by = {(r["backend"], r["dtype"]): r for r in rows}
    assert by["pytorch", "fp32"]["agreement"] == 1.0
    assert by["executorch", "fp32"]["agreement"] >= 0.95 and by["onnxruntime", "fp32"]["agreement"] >= 0.95
    assert by["executorch", "int8"]["size_bytes"] <= 0.3 * by["executorch", "fp32"]["size_bytes"]
    assert by["onnxruntime", "int8"]["size_bytes"] < by["onnxruntime", "fp32"]["size_bytes"]
    assert by["pytorch", "int8"]["size_bytes"] <= 0.3 * by["pytorch", "fp32"]["size_bytes"]
    for r in rows:
        assert r["subnet"] == "L1-H2-F64" and 0 <= r["accuracy"] <= 1
        # A real process with a real runtime; the native engine's worker imports neither torch nor
        # onnxruntime, so its floor is the interpreter + numpy (~30 MB).
        assert r["ms_median"] > 0 and r["peak_rss_mb"] > (20 if r["backend"] == "mlfs" else 50)


def test_outputs_are_written_and_exports_are_reused(compared, tiny_classifier_dir, tmp_path):
    work, rows = compared
    write_outputs(rows, tmp_path / "c.json", tmp_path / "c.png", {"quick": False})
    assert json.loads((tmp_path / "c.json").read_text())["rows"] == rows
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.png"]
    pte = next((work / "L1-H2-F64" / "pte").glob("*-int8.pte"))
    before = pte.stat().st_mtime_ns
    from mlfs_edge.eval.backends import Subject
    from mlfs_edge.eval.compare import build_artefacts

    model, tok, space = load_source(tiny_classifier_dir)
    subject = Subject(model, tok, parse_subnets([SUBNET], space)[0])
    built = build_artefacts([subject], ["executorch"], ["int8"], work, tiny_classifier_dir, progress=False)
    assert pte.stat().st_mtime_ns == before
    assert built["L1-H2-F64", "executorch", "int8"]["path"] == str(pte.with_suffix(".json"))


@pytest.mark.parametrize("argv, message", [
    (["--dtypes", "fp32,int4"], "unknown dtype 'int4'"),
    (["--backends", "tflite"], "unknown backend 'tflite'"),
    (["--subnets", "depth=1,heads=2,mlp=100"], "outside the search space"),
    (["--subnets", "depth=9"], "depth must be between 1 and 2"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_classifier_dir, tmp_path, capsys, argv, message):
    code = main(["compare", "--model", str(tiny_classifier_dir), "--work-dir", str(tmp_path / "w"),
                 "--json", str(tmp_path / "o.json"), *argv])
    err = capsys.readouterr().err.strip()
    # stderr may hold progress bars before it (loading the model); the error is one line, no traceback
    last = err.splitlines()[-1]
    assert code == 2 and last.startswith("mlfs-edge compare: error:") and message in last
    assert "Traceback" not in err
    assert not (tmp_path / "o.json").exists()


def test_a_missing_model_folder_says_what_to_do(tmp_path, capsys):
    assert main(["compare", "--model", str(tmp_path / "none")]) == 2
    assert "mlfs-edge demo" in capsys.readouterr().err


def test_agreement_is_against_fp32_pytorch_even_when_its_rows_are_not_asked(tiny_classifier_dir, tmp_path):
    settings = CompareSettings(dtypes=("int8",), backends=("onnxruntime",), threads=(1,), latency_runs=1, max_test=20)
    rows = run_compare(tiny_classifier_dir, [SUBNET], tmp_path / "w", settings, progress=False)
    assert [(r["backend"], r["dtype"]) for r in rows] == [("onnxruntime", "int8")]
    assert 0.5 <= rows[0]["agreement"] <= 1.0 and rows[0]["ms_median"] > 0
