"""ExecuTorch export: each .pte runs in the ExecuTorch runtime and matches eager PyTorch on real
sentences (tiny random BERT, real tokenizer and sentences); manifests; bad input."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from mlfs_edge.assets import minilm_path
from mlfs_edge.data import load_classification
from mlfs_edge.export import EncoderForExport, ExportConfig, Manifest, PteModel, export_pte
from mlfs_edge.export import lower as lower_mod

MAX_LEN = 64


@pytest.fixture(scope="module")
def sentences():
    data = load_classification("rotten_tomatoes")
    return data.test.texts[:24], data.train.texts[:16]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=MAX_LEN, num_labels=2, id2label={0: "neg", 1: "pos"},
                     label2id={"neg": 0, "pos": 1}, attn_implementation="eager")
    model = BertForSequenceClassification(cfg).eval()
    return model, AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module")
def exported(tiny, sentences, tmp_path_factory):
    """One export per dtype (lowering is the slow part: each costs seconds)."""
    model, tok = tiny
    out = tmp_path_factory.mktemp("pte")
    calib = tuple(sentences[1])
    configs = {"fp32": ExportConfig("fp32", "logits", MAX_LEN),
               "fp16": ExportConfig("fp16", "embedding", MAX_LEN),
               "int8": ExportConfig("int8", "embedding", MAX_LEN),
               "int8-static": ExportConfig("int8", "logits", MAX_LEN, "static", calib)}
    return out, {name: export_pte(model, tok, out, name, cfg, subnet={"layers": [0], "heads": [4], "mlp": [128]})
                 for name, cfg in configs.items()}


def _eager(model, tok, texts, output):
    wrapper = EncoderForExport(model, output).eval()
    rows = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, truncation=True, max_length=MAX_LEN, return_tensors="pt")
            rows.append(wrapper(enc["input_ids"], enc["attention_mask"]))
    return torch.cat(rows)


def test_wrapper_mask_matches_the_hf_two_d_mask(tiny, sentences):
    model, tok = tiny
    enc = tok(sentences[0][:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits
        out = EncoderForExport(model, "logits")(enc["input_ids"], enc["attention_mask"])
    assert (out - ref).abs().max() < 1e-5


def test_fp32_pte_matches_eager_pytorch(tiny, sentences, exported):
    model, tok = tiny
    pte = PteModel(exported[1]["fp32"])
    texts = sentences[0]
    diff = (pte(texts) - _eager(model, tok, texts, "logits")).abs().max().item()
    assert diff <= 1e-4, diff


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_fp16_and_int8_pte_pooled_outputs_match_eager(tiny, sentences, exported, name):
    model, tok = tiny
    texts = sentences[0]
    out, ref = PteModel(exported[1][name])(texts), _eager(model, tok, texts, "embedding")
    assert out.dtype == torch.float32 and out.shape == ref.shape == (len(texts), 64)
    cos = torch.nn.functional.cosine_similarity(out, ref, dim=1)
    assert cos.min() >= 0.99, cos.min()


def test_int8_static_pte_agrees_with_eager(tiny, sentences, exported):
    model, tok = tiny
    texts = sentences[0]
    out, ref = PteModel(exported[1]["int8-static"])(texts), _eager(model, tok, texts, "logits")
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) >= 0.99


def test_sizes_manifest_and_no_stray_files(exported):
    out, manifests = exported
    sizes = {name: Manifest.read(path).size_bytes for name, path in manifests.items()}
    # A tiny model is dominated by its 30k-token embedding table: int8 stores it at a quarter.
    assert sizes["int8"] <= 0.3 * sizes["fp32"] and sizes["fp16"] <= 0.55 * sizes["fp32"], sizes
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{n}.{ext}" for n in manifests for ext in ("pte", "json")] + ["tokenizer"])
    m = json.loads(manifests["int8-static"].read_text())
    assert m["labels"] == ["neg", "pos"] and m["max_length"] == MAX_LEN and m["min_length"] == 2
    assert m["subnet"] == {"layers": [0], "heads": [4], "mlp": [128]} and m["model_config"]["hidden_size"] == 64
    assert "static" in m["quantization"]["linear"] and m["tokenizer"]["vocab"] == "tokenizer/vocab.txt"
    assert (out / m["tokenizer"]["vocab"]).is_file()


def test_dynamic_sequence_length_covers_the_exported_range(exported):
    pte = PteModel(exported[1]["fp32"])
    for n in (2, 9, MAX_LEN):
        ids, mask = torch.full((1, n), 7, dtype=torch.long), torch.ones(1, n, dtype=torch.long)
        assert pte.forward(ids, mask).shape == (1, 2)
    with pytest.raises(ValueError, match=r"outside the exported range 2..64"):
        pte.forward(torch.ones(1, MAX_LEN + 1, dtype=torch.long), torch.ones(1, MAX_LEN + 1, dtype=torch.long))


def test_corrupt_pte_or_manifest_gives_a_one_line_error(exported, tmp_path):
    src_manifest = exported[1]["fp32"]
    import shutil

    for p in src_manifest.parent.iterdir():
        if p.name.startswith("fp32") or p.name == "tokenizer":
            (shutil.copytree if p.is_dir() else shutil.copy)(p, tmp_path / p.name)
    manifest = tmp_path / "fp32.json"
    pte = tmp_path / "fp32.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt.*re-export"):
        PteModel(manifest)
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PteModel(manifest)
    manifest.write_text(json.dumps({"format": "mlfs-edge-pte", "version": 1, "pte": "fp32.pte"}))
    with pytest.raises(ValueError, match=r"malformed.*missing"):
        PteModel(manifest)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PteModel(tmp_path / "nope.json")


def test_bad_export_configs_are_refused_before_any_work(tiny, tmp_path):
    model, tok = tiny
    for cfg, msg in [(ExportConfig(dtype="int4", max_length=MAX_LEN), "unknown dtype 'int4'"),
                     (ExportConfig(output="tokens", max_length=MAX_LEN), "unknown output"),
                     (ExportConfig(max_length=MAX_LEN + 1), "max length 65 out of range: use 2..64"),
                     (ExportConfig(dtype="int8", int8_mode="static", max_length=MAX_LEN), "calibration sentences")]:
        with pytest.raises(ValueError, match=msg):
            export_pte(model, tok, tmp_path, "x", cfg)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_lowering_leaves_no_files(tiny, tmp_path, monkeypatch):
    model, tok = tiny

    def boom(*args, **kwargs):
        raise RuntimeError("lowering failed")

    monkeypatch.setattr(lower_mod, "lower_to_executorch", boom)
    with pytest.raises(RuntimeError, match="lowering failed"):
        export_pte(model, tok, tmp_path / "out", "x", ExportConfig(max_length=32))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_xnnpack_runner_hook_runs_a_bare_encoder(tiny_bert_dir):
    """The engine benchmark's ExecuTorch row: a zero-argument runner over fixed inputs."""
    from transformers import AutoModel

    from mlfs_edge.export import xnnpack_runner

    model = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    ids = torch.randint(1000, 2000, (1, 12))
    mask = torch.ones_like(ids)
    out = xnnpack_runner(model, ids.numpy(), mask.numpy())()
    with torch.no_grad():
        ref = EncoderForExport(model, "embedding")(ids, mask)
    assert out.shape == (1, 32) and (out - ref).abs().max() <= 1e-4

