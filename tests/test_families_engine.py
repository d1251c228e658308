"""`mlfs-edge pack` + the C++ engine for every family of tests/families.py: fp32 outputs equal the
Hugging Face model's (decoders: logits over a prompt longer than the sliding windows, and greedy
generation token for token), fp16 / int8 files close to fp32, a prefix sub-network (depth prefix,
fewer heads = whole key/value groups, narrower MLP) equal to the HF model with the same weights
sliced by hand; what a family's config asks and the engine does not do is refused with one line."""

from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from families import ENCODERS, FAMILIES, FamilyCase, build

from mlfs_edge.config import SubnetConfig
from mlfs_edge.runtime import Engine, PackedFileError, pack
from mlfs_edge.runtime import format as fmt

RUN = list(FAMILIES)  # the engine runs every family (what it cannot do inside one is refused in one line)
PROMPT, NEW_TOKENS = 20, 16  # the prompt is longer than the tiny configs' sliding windows (8)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _model(case: FamilyCase) -> torch.nn.Module:
    """The family's tiny model with every parameter perturbed: biases (zero at init), norm weights
    (one or zero) and q/k norms then all matter, so a tensor packed in the wrong place shows."""
    model = build(case)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, dict[str, Path]]]:
    out = tmp_path_factory.mktemp("families_engine")
    result = {}
    for case in RUN:
        model = _model(case)
        result[case.name] = (model, {dtype: pack(model, out / f"{case.name}-{dtype}.mlfs", dtype=dtype)
                                     for dtype in ("fp32", "fp16", "int8")})
    return result


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    # ids from 3 on: never RoBERTa's padding id (1), whose position transformers numbers differently
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed))


def _encoder_batch() -> tuple[np.ndarray, np.ndarray]:
    ids = torch.stack([_ids(12, 0), _ids(12, 1)]).numpy()
    mask = np.ones_like(ids)
    mask[1, 8:] = 0  # a padded row
    return ids, mask


def _hf(model: torch.nn.Module, case: FamilyCase, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        if case.kind == "decoder":
            return model(torch.from_numpy(ids)[None]).logits[0].numpy()
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def _engine_out(engine: Engine, case: FamilyCase, ids: np.ndarray, mask: np.ndarray | None = None,
                subnet: SubnetConfig | None = None) -> np.ndarray:
    if case.kind == "decoder":
        return engine.logits(ids, subnet=subnet)
    return engine.run(ids, mask, subnet=subnet)


@pytest.mark.parametrize("case", RUN, ids=str)
def test_fp32_equals_hf(case: FamilyCase, packed: dict) -> None:
    model, files = packed[case.name]
    engine = Engine.load(files["fp32"])
    if case.kind == "decoder":
        ids = _ids(PROMPT).numpy()
        assert _rel(engine.logits(ids), _hf(model, case, ids)) <= 1e-4
        # greedy generation, token for token, against transformers' greedy loop (full forwards)
        seq = torch.from_numpy(ids)[None]
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        got = engine.generate(ids, max_new_tokens=NEW_TOKENS, stop_tokens=[])
        assert got == seq[0, PROMPT:].tolist()
    else:
        ids, mask = _encoder_batch()
        assert _rel(engine.run(ids, mask), _hf(model, case, ids, mask)) <= 1e-4


@pytest.mark.parametrize("case", RUN, ids=str)
def test_fp16_int8_close_to_fp32(case: FamilyCase, packed: dict) -> None:
    _, files = packed[case.name]
    ids, mask = (_ids(PROMPT).numpy(), None) if case.kind == "decoder" else _encoder_batch()
    ref = _engine_out(Engine.load(files["fp32"]), case, ids, mask)
    for dtype, min_cos, min_top1 in (("fp16", 0.9999, 0.95), ("int8", 0.99, 0.8)):
        got = _engine_out(Engine.load(files[dtype]), case, ids, mask)
        assert _cos(got, ref) >= min_cos, dtype
        assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= min_top1, dtype


def _slice_by_hand(model: torch.nn.Module, case: FamilyCase, depth: int, heads: int, mlp: int,
                   head_dim: int) -> torch.nn.Module:
    """A copy of `model` computing the prefix sub-network: the first `depth` layers, and in each the
    first `heads` query heads (their key/value groups) and `mlp` MLP channels. Dropping heads and
    channels = zeroing their columns of the output projections (o_proj, down_proj), through which
    alone they reach the residual stream."""
    sliced = copy.deepcopy(model)
    base = getattr(sliced, sliced.base_model_prefix)
    gpt2 = case.name == "GPT-2"
    if gpt2:
        holder, attr = base, "h"
    elif case.name == "DistilBERT":
        holder, attr = base.transformer, "layer"
    elif case.name == "ModernBERT":
        holder, attr = base, "layers"
    else:
        holder, attr = (base.encoder, "layer") if case.kind == "encoder" else (base, "layers")
    setattr(holder, attr, getattr(holder, attr)[:depth])
    for key in ("num_hidden_layers", "n_layer", "n_layers"):
        if hasattr(sliced.config, key):
            setattr(sliced.config, key, depth)
    if getattr(sliced.config, "layer_types", None) is not None:
        sliced.config.layer_types = sliced.config.layer_types[:depth]
    keep = heads * head_dim
    with torch.no_grad():
        for layer in getattr(holder, attr):
            if gpt2:  # Conv1D weights are [in, out]
                layer.attn.c_proj.weight[keep:, :] = 0
                layer.mlp.c_proj.weight[mlp:, :] = 0
            elif case.name == "DistilBERT":
                layer.attention.out_lin.weight[:, keep:] = 0
                layer.ffn.lin2.weight[:, mlp:] = 0
            elif case.name == "ModernBERT":
                layer.attn.Wo.weight[:, keep:] = 0
                layer.mlp.Wo.weight[:, mlp:] = 0
            elif case.name == "MPNet":
                layer.attention.attn.o.weight[:, keep:] = 0
                layer.output.dense.weight[:, mlp:] = 0
            elif case.kind == "encoder":
                layer.attention.output.dense.weight[:, keep:] = 0
                layer.output.dense.weight[:, mlp:] = 0
            else:
                layer.self_attn.o_proj.weight[:, keep:] = 0
                layer.mlp.down_proj.weight[:, mlp:] = 0
    return sliced


@pytest.mark.parametrize("case", RUN, ids=str)
def test_prefix_subnet_equals_hand_sliced(case: FamilyCase, packed: dict) -> None:
    model, files = packed[case.name]
    engine = Engine.load(files["fp32"])
    arch = engine.arch
    heads = arch.group_size * max(1, arch.num_kv_heads // 2)  # whole key/value groups, fewer heads
    heads = heads if heads < arch.num_heads else arch.num_heads // 2
    mlp = arch.intermediate // 2 + 3  # not a multiple of any panel width
    depth = arch.num_layers - 1
    subnet = SubnetConfig(tuple(range(depth)), (heads,) * depth, (mlp,) * depth)
    ref = _slice_by_hand(model, case, depth, heads, mlp, arch.head_dim)
    ids, mask = (_ids(PROMPT).numpy(), None) if case.kind == "decoder" else _encoder_batch()
    want = _hf(ref, case, ids, mask)
    assert _rel(_engine_out(engine, case, ids, mask, subnet), want) <= 1e-4
    # and it is a real sub-network: the full model's outputs differ
    assert _rel(_engine_out(engine, case, ids, mask), want) > 1e-3


def test_unknown_family_refused_in_one_line(tmp_path: Path) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="unsupported model type 'gpt_neox'") as info:
        pack(model, tmp_path / "x.mlfs")
    assert "\n" not in str(info.value) and not (tmp_path / "x.mlfs").exists()


def test_refused_pack_options_name_the_reason(tmp_path: Path) -> None:
    """What a decoder family's config may ask and the engine does not do: one line, no file."""
    case = next(f for f in FAMILIES if f.name == "Phi-3")
    model: Any = build(case)
    model.config.rope_scaling = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}
    with pytest.raises(ValueError, match="rope_scaling 'longrope' is not supported"):
        pack(model, tmp_path / "phi.mlfs")
    gpt2: Any = build(next(f for f in FAMILIES if f.name == "GPT-2"))
    gpt2.config.activation_function = "relu"
    with pytest.raises(ValueError, match="activation 'relu' is not supported"):
        pack(gpt2, tmp_path / "gpt2.mlfs")
    assert not list(tmp_path.iterdir())


def test_family_options_need_format_v4(packed: dict) -> None:
    """A file using the version 4 family options, relabelled as version 3, is refused in one line by
    the reader (an older reader sees the same unknown flags), not run as a Llama."""
    data = bytearray(packed["GPT-2"][1]["fp32"].read_bytes())
    struct.pack_into("<I", data, 8, 3)
    struct.pack_into("<I", data, fmt.CHECKSUM_OFFSET, fmt.checksum(data))
    with pytest.raises(PackedFileError, match="corrupt header: unknown flags") as info:
        Engine.from_bytes(bytes(data))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["Phi-3", "GPT-2", "DistilBERT"])
def test_cli_pack_of_a_saved_folder(name: str, packed: dict, tmp_path: Path) -> None:
    """`mlfs-edge pack FOLDER OUT` loads the family from its folder (the right auto class) and
    writes the same model as packing it in memory."""
    from mlfs_edge.cli import main

    model, files = packed[name]
    case = next(f for f in FAMILIES if f.name == name)
    model.save_pretrained(tmp_path / "hf")
    assert main(["pack", str(tmp_path / "hf"), str(tmp_path / "x.mlfs")]) == 0
    ids, mask = (_ids(PROMPT).numpy(), None) if case.kind == "decoder" else _encoder_batch()
    assert np.array_equal(_engine_out(Engine.load(tmp_path / "x.mlfs"), case, ids, mask),
                          _engine_out(Engine.load(files["fp32"]), case, ids, mask))


def test_cli_refuses_modernbert_mean_head_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlfs_edge.cli import main

    model = build(next(f for f in FAMILIES if f.name == "ModernBERT"))
    model.config.classifier_pooling = "mean"
    model.save_pretrained(tmp_path / "hf")
    capsys.readouterr()  # (save_pretrained's progress bar)
    assert main(["pack", str(tmp_path / "hf"), str(tmp_path / "x.mlfs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "classifier_pooling 'mean' is not supported" in err and not (tmp_path / "x.mlfs").exists()


def test_corrupt_family_option_refused(packed: dict) -> None:
    data = bytearray(packed["Gemma2"][1]["fp32"].read_bytes())
    # the v4 floats follow kind, kv heads, RoPE theta / factor and flags: attn_scale, attn_softcap, ...
    struct.pack_into("<f", data, fmt.KIND_OFFSET + 24, -1.0)
    struct.pack_into("<I", data, fmt.CHECKSUM_OFFSET, fmt.checksum(data))
    with pytest.raises(PackedFileError, match="family option out of range"):
        Engine.from_bytes(bytes(data))


@pytest.mark.parametrize("name", [c.name for c in ENCODERS] + ["GPT-2"])
def test_extracted_narrow_head_model_packs(name: str, tmp_path: Path) -> None:
    """A sub-network extracted with fewer heads is a model of type mlfs_<type> (heads x head size <
    hidden): the packer reads its family from the registry and the engine sizes q / k / v / o by the
    heads, so it packs and runs like the family itself."""
    from mlfs_edge.supernet import extract
    from mlfs_edge.supernet.arch import arch_of

    case = next(c for c in FAMILIES if c.name == name)
    model = _model(case)
    arch = arch_of(model)
    cfg = SubnetConfig.uniform(arch, depth=2, heads=2, mlp=arch.intermediate // 2, layer_policy="first")
    sub = extract(model, cfg)
    assert sub.config.model_type.startswith("mlfs_")
    engine = Engine.load(pack(sub, tmp_path / "sub.mlfs", dtype="fp32"))
    if case.kind == "decoder":
        ids = _ids(PROMPT).numpy()
        assert _rel(engine.logits(ids), _hf(sub, case, ids)) <= 1e-4
    else:
        ids, mask = _encoder_batch()
        assert _rel(engine.run(ids, mask), _hf(sub, case, ids, mask)) <= 1e-4


def _q4_rounded(model: torch.nn.Module, case: FamilyCase) -> torch.nn.Module:
    """A copy of `model` whose projection, LM-head and embedding weights are what a 4-bit file stores
    (quantize_q4_groups then back, groups along each output's inputs): the reference for the engine's
    q4 file, which differs from it only by the engine's 8-bit activations."""
    from transformers.pytorch_utils import Conv1D

    from mlfs_edge.quant.scheme import dequantize_q4_groups, quantize_q4_groups

    def rounded(w: torch.Tensor) -> torch.Tensor:
        return dequantize_q4_groups(*quantize_q4_groups(w))

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(rounded(module.weight))
            elif isinstance(module, Conv1D):  # GPT-2: [in, out]
                module.weight.copy_(rounded(module.weight.T).T)
        embedding = ref.get_input_embeddings()
        if embedding.weight is not ref.get_output_embeddings().weight:  # tied: rounded once, as the head
            embedding.weight.copy_(rounded(embedding.weight))
    return ref


@pytest.mark.parametrize("case", [c for c in FAMILIES if c.kind == "decoder"], ids=str)
def test_q4_and_vocab_ordered_files(case: FamilyCase, packed: dict, tmp_path: Path) -> None:
    """Every decoder family's 4-bit file computes transformers' model with 4-bit-rounded weights (up to
    the engine's 8-bit activations), and a file with its vocabulary rows in another order (`pack
    --vocab-order`: token ids unchanged) gives the same logits, the same greedy tokens, and the same
    tokens again when a draft scores only the first 32 rows of that order."""
    from mlfs_edge.runtime import frequency_order

    model, files = packed[case.name]
    ids = _ids(PROMPT).numpy()
    ref = Engine.load(files["fp32"]).logits(ids)
    q4 = Engine.load(pack(model, tmp_path / "q4.mlfs", dtype="q4")).logits(ids)
    want = _hf(_q4_rounded(model, case), case, ids)
    assert _cos(q4, want) >= 0.999 and _cos(q4, want) > _cos(q4, ref) + 0.005, (_cos(q4, want), _cos(q4, ref))
    order = frequency_order(_ids(400, seed=5).tolist(), 128)
    assert order != list(range(128))  # a real permutation
    ordered = Engine.load(pack(model, tmp_path / "ordered.mlfs", dtype="fp32", vocab_order=order))
    assert ordered.vocab_ordered and _rel(ordered.logits(ids), ref) <= 1e-5
    plain = Engine.load(files["fp32"]).generate(ids, max_new_tokens=NEW_TOKENS, stop_tokens=[])
    assert ordered.generate(ids, max_new_tokens=NEW_TOKENS, stop_tokens=[]) == plain
    draft = SubnetConfig.uniform(ordered.arch, depth=1)
    assert ordered.generate(ids, max_new_tokens=NEW_TOKENS, stop_tokens=[], draft=draft, draft_vocab=32) == plain
