"""The decoder engine against Hugging Face PyTorch on tiny random Llama / Qwen2 configs: fp32 logits
of the full model and of sub-networks (depth only, width only, per-layer widths), greedy generation
identical to `model.generate`, the weight formats, the KV cache, sampling and bad input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from mlfs_edge.config import SubnetConfig
from mlfs_edge.runtime import Engine, PackedFileError, pack
from mlfs_edge.runtime import format as fmt
from mlfs_edge.supernet.arch import arch_of
from mlfs_edge.supernet.elastic import ElasticSupernet

VOCAB, POS = 160, 96


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POS,
                      tie_word_embeddings=True, rope_theta=5000.0, rms_norm_eps=1e-5)
    return LlamaForCausalLM(cfg).eval()


def _qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=POS,
                      tie_word_embeddings=False, rope_theta=1e6, rms_norm_eps=1e-6,
                      rope_scaling={"type": "linear", "factor": 2.0})
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random q/k/v biases (initialised to 0) so the test sees them
        for layer in model.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(0, 0.2)
    return model


MODELS = {"llama": _llama, "qwen2": _qwen2}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: make() for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def packed(models, tmp_path_factory) -> dict[tuple[str, str], Engine]:
    out = tmp_path_factory.mktemp("packed_decoders")
    return {(name, dtype): Engine.load(pack(model, out / f"{name}-{dtype}.mlfs", dtype=dtype))
            for name, model in models.items() for dtype in ("fp32", "fp16", "int8", "q4")}


def _subnets(model: torch.nn.Module) -> dict[str, SubnetConfig]:
    arch = arch_of(model)
    g, f = arch.group_size, arch.intermediate
    return {
        "full": SubnetConfig.full(arch),
        "depth": SubnetConfig((0, 2), (arch.num_heads,) * 2, (f,) * 2),
        "width": SubnetConfig((0, 1, 2), (g,) * 3, (f // 2,) * 3),
        "per_layer": SubnetConfig((0, 1, 2), (arch.num_heads, g, arch.num_heads), (f, 32, f // 2)),
    }


def _hf_logits(model: torch.nn.Module, cfg: SubnetConfig, ids: torch.Tensor) -> np.ndarray:
    sup = ElasticSupernet(model)
    with torch.no_grad(), sup.activated(cfg):
        return model(ids[None]).logits[0].numpy()


def _prompt(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("which", ["full", "depth", "width", "per_layer"])
def test_fp32_logits_match_pytorch(models, packed, name, which):
    model, engine = models[name], packed[(name, "fp32")]
    cfg = _subnets(model)[which]
    ids = _prompt(40)
    ref = _hf_logits(model, cfg, ids)
    for threads in (1, 2):
        got = engine.logits(ids.numpy(), subnet=cfg, threads=threads)
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, f"{name}/{which}/{threads} threads: max rel diff {rel:.2e}"


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("which", ["full", "per_layer"])
def test_greedy_generation_identical_to_hf(models, packed, name, which):
    model, engine = models[name], packed[(name, "fp32")]
    cfg = _subnets(model)[which]
    ids = _prompt(12, seed=3)
    mask = torch.ones_like(ids[None])  # explicit: HF would otherwise mask prompt tokens equal to pad_token_id
    sup = ElasticSupernet(model)
    with torch.no_grad(), sup.activated(cfg):
        # no HF cache: a depth-sliced model's layers keep their original cache indices
        ref = model.generate(ids[None], attention_mask=mask, max_new_tokens=24, do_sample=False,
                             use_cache=False, pad_token_id=0, eos_token_id=None)[0, 12:].tolist()
    assert engine.generate(ids.tolist(), subnet=cfg, max_new_tokens=24, stop_tokens=[]) == ref
    # repetition penalty is HF's rule too
    with torch.no_grad(), sup.activated(cfg):
        ref_rp = model.generate(ids[None], attention_mask=mask, max_new_tokens=16, do_sample=False,
                                use_cache=False, pad_token_id=0, eos_token_id=None,
                                repetition_penalty=1.5)[0, 12:].tolist()
    got_rp = engine.generate(ids.tolist(), subnet=cfg, max_new_tokens=16, stop_tokens=[], repetition_penalty=1.5)
    assert got_rp == ref_rp


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("dtype", "min_cos"), [("fp16", 0.9999), ("int8", 0.995), ("q4", 0.97)])
def test_weight_formats_close_to_fp32(models, packed, name, dtype, min_cos):
    ids = _prompt(32, seed=5).numpy()
    ref = packed[(name, "fp32")].logits(ids)
    got = packed[(name, dtype)].logits(ids)
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos >= min_cos, f"{name} {dtype}: cosine {cos:.5f}"
    # file sizes shrink with the format (tied head stored once: llama)
    sizes = {d: packed[(name, d)].file_size for d in ("fp32", "fp16", "int8", "q4")}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["q4"]


def test_head_dtype_can_differ(models, tmp_path):
    model = models["qwen2"]  # untied: the embedding table follows the head's dtype too
    ids = _prompt(24, seed=21).numpy()
    fp32 = Engine.load(pack(model, tmp_path / "f.mlfs")).logits(ids)
    mixed = Engine.load(pack(model, tmp_path / "m.mlfs", dtype="q4", head_dtype="fp16"))
    assert mixed.metadata["head_dtype"] == "fp16"
    assert {_tensor_dtype(mixed.path, n) for n in ("head.w", "emb.w", "l0.q.w")} == {1, 3}
    got = mixed.logits(ids)
    assert float((got * fp32).sum() / np.linalg.norm(got) / np.linalg.norm(fp32)) > 0.95


def _tensor_dtype(path: str, name: str) -> int:
    with open(path, "rb") as f:
        data = f.read()
    i = _tensor_names(path).index(name)
    return struct.unpack_from("<I", data, 256 + 128 * i + 64)[0]


def test_tied_head_stored_once(packed):
    names = {t for t in _tensor_names(packed[("llama", "fp32")].path)}
    assert "head.w" in names and "emb.w" not in names
    assert "emb.w" in set(_tensor_names(packed[("qwen2", "fp32")].path))


def _tensor_names(path: str) -> list[str]:
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<I", data, 28)[0]
    return [data[256 + 128 * i: 256 + 128 * i + 64].rstrip(b"\0").decode() for i in range(n)]


def test_fp16_cache_and_threads(packed):
    engine = packed[("llama", "fp32")]
    ids = _prompt(30, seed=7).numpy()
    ref = engine.logits(ids)
    half = engine.logits(ids, cache_dtype="fp16", threads=2)
    assert np.abs(half - ref).max() / np.abs(ref).max() < 2e-3
    assert engine.generate(ids, max_new_tokens=10, stop_tokens=[], cache_dtype="fp16") == \
        engine.generate(ids, max_new_tokens=10, stop_tokens=[])


def test_stream_reports_throughput_and_rolls_back(packed):
    engine = packed[("llama", "fp32")]
    prompt = _prompt(10, seed=9).tolist()
    stream = engine.stream(prompt, max_new_tokens=12, stop_tokens=[])
    first = list(stream)
    assert len(first) == 12 and stream.tokens == prompt + first
    assert stream.prefill_tok_s > 0 and stream.decode_tok_s > 0
    assert stream.cache_bytes > 0
    stream.rollback(len(prompt) + 4)  # keep 4 generated tokens, regenerate the rest
    again = list(stream)
    assert first[:4] + again == first


def test_kv_cache_grows_in_chunks(packed):
    engine = packed[("llama", "fp32")]
    short = engine.stream([1, 2, 3], max_new_tokens=2, stop_tokens=[])
    list(short)
    long = engine.stream([1, 2, 3], max_new_tokens=90, stop_tokens=[])
    list(long)
    assert short.cache_bytes < long.cache_bytes  # allocated with the tokens held, not max positions up front


def test_sampling(packed):
    engine = packed[("llama", "fp32")]
    prompt = _prompt(8, seed=11).tolist()
    greedy = engine.generate(prompt, max_new_tokens=16, stop_tokens=[])
    assert engine.generate(prompt, max_new_tokens=16, stop_tokens=[], temperature=0.8, top_k=1) == greedy
    a = engine.generate(prompt, max_new_tokens=16, stop_tokens=[], temperature=1.5, top_p=0.95, seed=1)
    b = engine.generate(prompt, max_new_tokens=16, stop_tokens=[], temperature=1.5, top_p=0.95, seed=1)
    c = engine.generate(prompt, max_new_tokens=16, stop_tokens=[], temperature=1.5, top_p=0.95, seed=2)
    assert a == b and a != c
    # a stop token ends the generation and is returned
    stop = greedy[3]
    out = engine.generate(prompt, max_new_tokens=16, stop_tokens=[stop])
    assert out == greedy[:greedy.index(stop) + 1]


def test_bad_input_is_a_python_error(packed):
    engine = packed[("llama", "fp32")]
    arch = engine.arch
    with pytest.raises(ValueError, match="positions"):
        engine.generate(list(range(1, 10)) * 11, max_new_tokens=4)  # 99 tokens > 96 positions
    with pytest.raises(ValueError, match="vocabulary"):
        engine.generate([1, VOCAB], max_new_tokens=4)
    with pytest.raises(ValueError, match="vocabulary"):
        engine.generate([-1], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate([1, 2], max_new_tokens=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate([1, 2], max_new_tokens=10**15)
    with pytest.raises(ValueError, match="key/value groups"):
        engine.generate([1, 2], subnet=SubnetConfig((0,), (3,), (96,)), max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one"):
        engine.generate([], max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        engine.generate([1], max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([1], max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="cache_dtype"):
        engine.generate([1], max_new_tokens=2, cache_dtype="int8")
    with pytest.raises(ValueError, match="token ids must be integers"):
        engine.generate([2**70], max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder"):
        engine.run(np.ones((1, 4), np.int64))
    q4 = packed[("llama", "q4")]
    with pytest.raises(ValueError, match="multiples of its 32-input groups"):
        q4.generate([1, 2], subnet=SubnetConfig((0,), (arch.num_heads,), (48,)), max_new_tokens=2)
    assert len(q4.generate([1, 2], subnet=SubnetConfig((0,), (2,), (64,)), max_new_tokens=2, stop_tokens=[])) == 2


def test_encoder_file_refuses_generate(tiny_bert_dir, tmp_path):
    engine = Engine.load(pack(tiny_bert_dir, tmp_path / "enc.mlfs"))
    with pytest.raises(ValueError, match="encoder"):
        engine.generate([1, 2], max_new_tokens=2)
    with pytest.raises(ValueError, match="decoders"):
        pack(tiny_bert_dir, tmp_path / "enc-q4.mlfs", dtype="q4")


def _with_version(data: bytes, version: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into("<I", buf, 8, version)
    struct.pack_into("<I", buf, fmt.CHECKSUM_OFFSET, 0)
    struct.pack_into("<I", buf, fmt.CHECKSUM_OFFSET, fmt.checksum(buf))
    assert zlib.crc32(b"") == 0
    return bytes(buf)


def test_format_versions(tiny_bert_dir, tmp_path, packed):
    enc = pack(tiny_bert_dir, tmp_path / "enc.mlfs").read_bytes()
    assert struct.unpack_from("<I", enc, 8)[0] == fmt.FORMAT_VERSION == 4
    ids = np.ones((1, 5), np.int64)
    for old in (1, 2, 3):  # old fp32 files still load (a v1 file's kind bytes are 0; v4 only added options)
        assert np.array_equal(Engine.from_bytes(_with_version(enc, old)).run(ids), Engine.from_bytes(enc).run(ids))
    enc8 = pack(tiny_bert_dir, tmp_path / "enc8.mlfs", dtype="int8").read_bytes()
    Engine.from_bytes(enc8)
    Engine.from_bytes(_with_version(enc8, 3))  # v3 int8 files load: v4 kept the layouts, added family options
    with pytest.raises(PackedFileError, match=r"version 2 stores int8 weights in an older layout.*re-pack"):
        Engine.from_bytes(_with_version(enc8, 2))  # v2's int8 "K4N" bytes cannot be read as v3's panels
    with pytest.raises(PackedFileError, match="re-pack"):
        Engine.from_bytes(_with_version(enc, 99))
    with open(packed[("llama", "fp32")].path, "rb") as f:
        dec = f.read()
    assert Engine.from_bytes(dec).kind == "decoder"
    # version 3 changed the int8 and q4 layouts: an older file without them still loads, one with
    # them is refused with a one-line "re-pack" message
    assert Engine.from_bytes(_with_version(dec, 2)).kind == "decoder"
    with open(packed[("llama", "q4")].path, "rb") as f:
        old_q4 = _with_version(f.read(), 2)
    with pytest.raises(PackedFileError, match=r"version 2 stores q4 weights in an older layout; re-pack") as info:
        Engine.from_bytes(old_q4)
    assert "\n" not in str(info.value)


def test_pack_refuses_unsupported_rope(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      max_position_embeddings=64, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="rope_scaling 'dynamic'"):
        pack(LlamaForCausalLM(cfg), tmp_path / "dyn.mlfs")


def test_subnet_switch_copies_nothing(packed):
    engine = packed[("llama", "int8")]
    ids = _prompt(16, seed=13).numpy()
    cfgs = _subnets(_llama())
    outs = {k: engine.logits(ids, subnet=c) for k, c in cfgs.items()}
    again = engine.logits(ids, subnet=cfgs["full"])
    assert np.array_equal(outs["full"], again)  # switching back and forth is exact: nothing was rewritten
