"""Sentence embeddings on the engine (`Engine.embed`, `mlfs-edge run --embed`) against the
sentence-transformers pipeline, with the pooling read from the model folder by `pack`.

sentence-transformers itself is not installed (6.0.1 needs huggingface_hub < 2, the stack pins
2.4.0), so `st_encode` below reproduces its `encode()` for a Transformer → Pooling → Normalize folder
from its own code (sentence_transformers/models/Pooling.py, Normalize.py, Transformer.py): the
folder's modules.json, 1_Pooling/config.json and sentence_bert_config.json read here independently
of mlfs_edge.models.sentence_pooling.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_clean_output import unexpected_lines

from mlfs_edge.cli import main
from mlfs_edge.models import SENTENCE_POOLINGS, sentence_pooling
from mlfs_edge.runtime import Engine, pack

# pooling_mode_* key of each engine mode, as sentence-transformers writes 1_Pooling/config.json
ST_KEYS = {"mean": "pooling_mode_mean_tokens", "cls_token": "pooling_mode_cls_token",
           "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
           "lasttoken": "pooling_mode_lasttoken"}


def st_pool(hidden: torch.Tensor, mask: torch.Tensor, config: dict) -> torch.Tensor:
    """sentence_transformers.models.Pooling.forward for one enabled mode (its own arithmetic)."""
    m = mask.unsqueeze(-1).expand(hidden.size()).to(hidden.dtype)
    if config.get("pooling_mode_cls_token"):
        return hidden[:, 0]
    if config.get("pooling_mode_max_tokens"):
        h = hidden.clone()
        h[m == 0] = -1e9
        return torch.max(h, 1)[0]
    if config.get("pooling_mode_lasttoken"):
        seq = hidden.shape[1]
        values, indices = mask.flip(1).max(1)
        indices = torch.where(values == 0, seq - 1, indices)
        gather = (seq - indices - 1).unsqueeze(-1).repeat(1, hidden.shape[2]).unsqueeze(1)
        return torch.gather(hidden * m, 1, gather).squeeze(1)
    summed, count = torch.sum(hidden * m, 1), torch.clamp(m.sum(1), min=1e-9)
    if config.get("pooling_mode_mean_sqrt_len_tokens"):
        return summed / torch.sqrt(count)
    return summed / count


@torch.no_grad()
def st_encode(folder: Path, texts: list[str]) -> np.ndarray:
    """SentenceTransformer(folder).encode(texts): tokenize (truncated to max_seq_length), the
    transformer's last hidden state, the configured pooling, then Normalize if the folder lists it."""
    from transformers import AutoModel, AutoTokenizer

    modules = json.loads((folder / "modules.json").read_text())
    pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    max_len = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    enc = tokenizer(texts, padding=True, truncation="longest_first", max_length=max_len, return_tensors="pt")
    out = st_pool(model(**enc).last_hidden_state, enc["attention_mask"], pooling)
    if modules[-1]["type"].endswith("Normalize"):
        out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out.numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def st_folder(src: Path, dst: Path, pooling: dict | None, normalize: bool = True, max_seq_length: int = 24,
              extra_modules: tuple[str, ...] = ()) -> Path:
    """A copy of model folder `src` made a sentence-transformers folder (pooling: its 1_Pooling config)."""
    shutil.copytree(src, dst)
    kinds = ["Transformer", "Pooling", *extra_modules] + (["Normalize"] if normalize else [])
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    (dst / "modules.json").write_text(json.dumps([
        {"idx": i, "name": str(i), "path": paths.get(k, f"{i}_{k}"), "type": f"sentence_transformers.models.{k}"}
        for i, k in enumerate(kinds)]))
    (dst / "1_Pooling").mkdir()
    if pooling is not None:
        (dst / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (dst / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                "do_lower_case": False}))
    return dst


def mode_config(mode: str) -> dict:
    return {"word_embedding_dimension": 32, **{key: m == mode for m, key in ST_KEYS.items()}}


TINY_TEXTS = ["a", "the film is a gripping, beautifully shot story of two brothers and their long road home",
              "not good", "an utterly forgettable sequel that repeats every joke of the first one twice over"]


# --- every pooling mode on a tiny random BERT, padded batch, against sentence-transformers' arithmetic ------
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("mode", list(ST_KEYS))
def test_every_pooling_mode_matches_the_pipeline(tiny_bert_dir, tmp_path, mode, normalize):
    folder = st_folder(tiny_bert_dir, tmp_path / "st", mode_config(mode), normalize=normalize)
    engine = Engine.load(pack(folder, tmp_path / "tiny.mlfs", tokenizer=folder))
    assert engine.pooling == mode and engine.normalize == normalize
    assert engine.sentence_transformers == {"max_seq_length": 24, "do_lower_case": False}
    ref = st_encode(folder, TINY_TEXTS)  # the second and last text are cut at 24 tokens, "a" is padded
    from transformers import AutoTokenizer

    got = engine.embed(TINY_TEXTS, AutoTokenizer.from_pretrained(folder), batch_size=3)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_explicit_pooling_and_normalize_override_the_folder(tiny_bert_dir, tmp_path):
    folder = st_folder(tiny_bert_dir, tmp_path / "st", mode_config("mean"))
    engine = Engine.load(pack(folder, tmp_path / "x.mlfs", pooling="max", normalize=False))
    assert engine.pooling == "max" and not engine.normalize
    plain = Engine.load(pack(tiny_bert_dir, tmp_path / "plain.mlfs"))  # not a sentence-transformers folder
    assert plain.pooling == "mean" and not plain.normalize and plain.sentence_transformers == {}


# --- what the engine cannot reproduce, or a broken folder: one line ------------------------------------
BAD_FOLDERS = {
    "broken JSON": ("{not json", "cannot read"),
    "unknown mode": ({"pooling_mode_median_tokens": True}, "unknown pooling mode 'pooling_mode_median_tokens'"),
    "unknown string mode": ({"pooling_mode": "median"}, "unknown pooling_mode 'median'"),
    "two modes": ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, "concatenates mean \\+ max"),
    "no mode": ({"pooling_mode_mean_tokens": False}, "no pooling mode is enabled"),
    "weightedmean": ({"pooling_mode": "weightedmean"}, "weightedmean pooling is not implemented"),
    "not a bool": ({"pooling_mode_mean_tokens": "yes"}, "must be true or false"),
    "missing config": (None, "config .* is missing"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_pooling_configs_are_one_line_errors(tiny_bert_dir, tmp_path, case, capsys):
    content, message = BAD_FOLDERS[case]
    folder = st_folder(tiny_bert_dir, tmp_path / "st", None)
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / "1_Pooling" / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        sentence_pooling(folder)
    assert "\n" not in str(err.value)
    assert main(["pack", str(folder), str(tmp_path / "x.mlfs")]) == 2
    lines = unexpected_lines(capsys.readouterr().err)  # beside the weights' loading bar: one line
    assert len(lines) == 1 and lines[0].startswith("mlfs-edge pack: error:"), lines
    assert not (tmp_path / "x.mlfs").exists()


def test_other_pipelines_are_refused(tiny_bert_dir, tmp_path):
    folder = st_folder(tiny_bert_dir, tmp_path / "dense", mode_config("mean"), extra_modules=("Dense",))
    with pytest.raises(ValueError, match="Transformer → Pooling → Dense → Normalize is not what the engine runs"):
        sentence_pooling(folder)
    assert sentence_pooling(tiny_bert_dir) is None  # no modules.json: not a sentence-transformers folder


# --- the command --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packed_st(tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed_cli")
    folder = st_folder(tiny_bert_dir, out / "st", mode_config("cls_token"))
    assert main(["pack", str(folder), str(out / "st.mlfs")]) == 0
    return out / "st.mlfs", folder


def test_run_embed_writes_npy_and_jsonl_in_input_order(packed_st, tmp_path, capsys):
    path, folder = packed_st
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(TINY_TEXTS[:2]) + "\n\n" + "\n".join(TINY_TEXTS[2:]) + "\n")
    ref = st_encode(folder, TINY_TEXTS)
    assert main(["run", str(path), "--embed", "--input", str(texts), "--output", str(tmp_path / "v.npy"),
                 "--batch-size", "2"]) == 0
    assert "wrote 4 embeddings of 32 dimensions (cls_token pooling, normalised)" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), ref, rtol=1e-4, atol=2e-5)
    assert main(["run", str(path), "--embed", "--text", "first", "--input", str(texts),
                 "--output", str(tmp_path / "v.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["first", *TINY_TEXTS]
    np.testing.assert_allclose([r["embedding"] for r in rows[1:]], ref, rtol=1e-4, atol=2e-5)
    assert main(["run", str(path), "--embed", "--text", "hello world", "--subnet", "depth=2,heads=2"]) == 0
    out = capsys.readouterr().out
    assert "norm 1.0000  | hello world" in out and "sub-network L2-H2-F64" in out


@pytest.mark.parametrize("argv, message", [
    (["--text", "x", "--output", "v.npy"], "--output writes embeddings: add --embed"),
    (["--embed", "--text", "x", "--output", "v.csv"], "write a .npy or a .jsonl file"),
    (["--embed"], "give the text to run"),
    (["--embed", "--input", "missing.txt"], "cannot read missing.txt"),
    (["--embed", "--text", "x", "--batch-size", "0"], "batch_size must be a positive integer"),
])
def test_run_embed_bad_arguments_are_one_line(packed_st, argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(packed_st[0]), *argv]) == 2
    lines = unexpected_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines


def test_embed_refuses_classifiers_and_decoders(tmp_path, packed_tiny_decoder, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    clf = pack(BertForSequenceClassification(cfg).eval(), tmp_path / "clf.mlfs")
    for path, what in ((clf, "is a classifier (LABEL_0, LABEL_1)"), (packed_tiny_decoder["fp32"], "is a decoder")):
        with pytest.raises(ValueError, match=what.replace("(", r"\(").replace(")", r"\)")):
            Engine.load(path).embed(["x"], tokenizer=None)
        assert main(["run", str(path), "--embed", "--text", "x"]) == 2
        lines = unexpected_lines(capsys.readouterr().err)
        assert len(lines) == 1 and what in lines[0], lines


def test_normalize_is_refused_for_a_classifier(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    with pytest.raises(ValueError, match="normalize is for a plain encoder"):
        pack(BertForSequenceClassification(cfg).eval(), tmp_path / "x.mlfs", normalize=True)


def test_reader_checks_the_pooling_code_and_the_normalise_flag(tiny_bert_dir, tmp_path):
    import struct

    from mlfs_edge.runtime import PackedFileError
    from mlfs_edge.runtime.format import FLAG_NORMALIZE, KIND_OFFSET, POOLING_CODES

    pooling_offset = struct.calcsize("<8sIIQIIQQQ") + 9 * 4  # the tenth model dimension
    flags_offset = KIND_OFFSET + 16

    def patched(path: Path, offset: int, value: int) -> bytes:
        data = bytearray(path.read_bytes())
        struct.pack_into("<I", data, offset, value)
        return bytes(data)

    plain = pack(tiny_bert_dir, tmp_path / "plain.mlfs")
    assert set(POOLING_CODES) == {"cls", *SENTENCE_POOLINGS}  # the format holds every mode `pack` takes
    for name, code in POOLING_CODES.items():  # C++ names each code as the Python writer does
        if name != "cls":  # (cls also needs the pooler's weights)
            assert Engine.from_bytes(patched(plain, pooling_offset, code), False).pooling == name
    with pytest.raises(PackedFileError, match="unknown pooling code 6"):
        Engine.from_bytes(patched(plain, pooling_offset, 6), verify_checksum=False)
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    clf = pack(BertForSequenceClassification(cfg).eval(), tmp_path / "clf.mlfs")
    with pytest.raises(PackedFileError, match="only a plain encoder's embedding can be normalised"):
        Engine.from_bytes(patched(clf, flags_offset, FLAG_NORMALIZE), verify_checksum=False)
    with pytest.raises(PackedFileError, match="a classifier reads cls or mean pooling"):
        Engine.from_bytes(patched(clf, pooling_offset, POOLING_CODES["max"]), verify_checksum=False)


def test_lower_casing_and_truncation_follow_the_recorded_pipeline(tiny_bert_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = st_folder(tiny_bert_dir, tmp_path / "st", mode_config("mean"), max_seq_length=5)
    settings = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(json.dumps({**settings, "do_lower_case": True}))
    engine = Engine.load(pack(folder, tmp_path / "x.mlfs"))
    real, seen = AutoTokenizer.from_pretrained(folder), []

    def spy(texts: list[str], **kwargs: object) -> dict:
        seen.append((texts, kwargs["max_length"]))
        return real(texts, **kwargs)

    engine.embed(["Hello World, a long sentence"], spy)
    assert seen == [(["hello world, a long sentence"], 5)]
    engine.embed(["Hi"], spy, max_length=3)  # an explicit limit wins
    assert seen[-1] == (["hi"], 3)
