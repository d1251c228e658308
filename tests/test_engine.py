"""The C++ engine against PyTorch on tiny random BERTs: every dtype, sub-networks, masks, LoRA, threads,
and the checks at the Python boundary."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from mlfs_edge.config import SubnetConfig
from mlfs_edge.runtime import Engine, pack
from mlfs_edge.runtime.reference import reference_output, sliced_reference

VOCAB, MAX_POS = 120, 40


def tiny_config(**kw) -> BertConfig:
    # hidden 48 / 4 heads: head_dim 12 and MLP 80 are not multiples of 16, so kernel tails are exercised.
    base = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80,
                max_position_embeddings=MAX_POS, attn_implementation="eager")
    return BertConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return BertModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("engine")
    return {dt: Engine.load(pack(tiny_model, d / f"{dt}.mlfs", dtype=dt)) for dt in ("fp32", "fp16", "int8")}


def batch(rows: int = 3, seq: int = 11, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(rows, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    for r in range(1, rows):  # right padding of different lengths
        mask[r, seq - 2 * r:] = 0
    return ids, mask


SUBNETS = [
    SubnetConfig((0, 1, 2), (4, 4, 4), (80, 80, 80)),  # full
    SubnetConfig((0, 2), (2, 2), (40, 40)),
    SubnetConfig((1,), (1,), (8,)),
    SubnetConfig((0, 1, 2), (3, 1, 4), (80, 17, 33)),  # per-layer widths
]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("cfg", SUBNETS, ids=lambda c: c.name)
def test_fp32_matches_pytorch_on_every_subnet(engines, tiny_model, cfg):
    ids, mask = batch()
    want = reference_output(sliced_reference(tiny_model, cfg), ids, mask)
    got = engines["fp32"].run(ids, mask, subnet=cfg)
    assert got.shape == (3, 48) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("cfg", SUBNETS[:3], ids=lambda c: c.name)
def test_fp16_and_int8_stay_close_to_fp32(engines, tiny_model, cfg):
    ids, mask = batch()
    want = reference_output(sliced_reference(tiny_model, cfg), ids, mask)
    assert cosine(engines["fp16"].run(ids, mask, subnet=cfg), want).min() >= 0.999
    assert cosine(engines["int8"].run(ids, mask, subnet=cfg), want).min() >= 0.99


def test_int8_engine_follows_the_shared_scheme_more_closely_than_fp32(engines, tiny_model):
    # Quantisation error must show (the int8 path really runs) but stay small.
    ids, mask = batch()
    fp32, int8 = engines["fp32"].run(ids, mask), engines["int8"].run(ids, mask)
    assert 0 < np.abs(fp32 - int8).max() < 0.2 * np.abs(fp32).max()


def test_classifier_head_and_cls_pooler(tmp_path):
    torch.manual_seed(3)
    model = BertForSequenceClassification(tiny_config(num_labels=2)).eval()
    engine = Engine.load(pack(model, tmp_path / "cls.mlfs"))
    ids, mask = batch()
    for cfg in (None, SUBNETS[1]):
        ref = sliced_reference(model, cfg or SubnetConfig.full(engine.arch))
        np.testing.assert_allclose(engine.run(ids, mask, subnet=cfg), reference_output(ref, ids, mask), atol=1e-4)
    plain = BertModel(tiny_config()).eval()
    cls_engine = Engine.load(pack(plain, tmp_path / "pooler.mlfs", pooling="cls"))
    np.testing.assert_allclose(cls_engine.run(ids, mask), reference_output(plain, ids, mask, "cls"), atol=1e-4)


def test_padding_does_not_change_a_row(engines):
    ids, mask = batch(rows=1, seq=7)
    alone = engines["fp32"].run(ids, mask)
    padded_ids = np.concatenate([ids, np.full((1, 5), 7)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((1, 5), np.int64)], axis=1)
    np.testing.assert_allclose(engines["fp32"].run(padded_ids, padded_mask), alone, atol=1e-5)


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_threads_give_the_same_result(engines, dtype):
    ids, mask = batch(rows=2, seq=17)
    one = engines[dtype].run(ids, mask, threads=1)
    for n in (2, 3):
        np.testing.assert_allclose(engines[dtype].run(ids, mask, threads=n), one, atol=1e-6)


def test_switching_subnets_reloads_nothing(engines):
    engine = engines["fp32"]
    ids, mask = batch()
    first = engine.run(ids, mask, subnet=SUBNETS[1])
    workspace = engine.workspace_bytes
    for cfg in SUBNETS:
        engine.run(ids, mask, subnet=cfg)
    np.testing.assert_array_equal(engine.run(ids, mask, subnet=SUBNETS[1]), first)
    assert engine.workspace_bytes == workspace  # buffers sized once for this batch x seq, then reused


def test_int32_ids_and_out_buffer(engines):
    ids, mask = batch()
    want = engines["fp32"].run(ids, mask)
    out = np.empty((3, 48), np.float32)
    got = engines["fp32"].run(ids.astype(np.int32), mask.astype(np.int32), out=out)
    assert got is out or np.shares_memory(got, out)
    np.testing.assert_array_equal(out, want)


def test_concurrent_calls_from_python_threads_are_safe(engines):
    ids, mask = batch()
    want = engines["fp32"].run(ids, mask)
    results = []

    def work():
        for _ in range(5):
            results.append(engines["fp32"].run(ids, mask, subnet=SUBNETS[0]))

    workers = [threading.Thread(target=work) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(results) == 15
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_boundary_checks_raise_clear_errors(engines):
    e = engines["fp32"]
    ids, mask = batch()
    with pytest.raises(TypeError, match="numpy array"):
        e.run(ids.tolist(), mask)
    with pytest.raises(TypeError, match="int64 or int32"):
        e.run(ids.astype(np.float32), mask.astype(np.float32))
    with pytest.raises(TypeError, match="dtype of input_ids"):
        e.run(ids, mask.astype(np.int32))
    with pytest.raises(ValueError, match="2-D"):
        e.run(ids[0], mask[0])
    with pytest.raises(ValueError, match="C-contiguous"):
        e.run(np.asfortranarray(ids), np.asfortranarray(mask))
    with pytest.raises(ValueError, match="shape of input_ids"):
        e.run(ids, np.ascontiguousarray(mask[:, :5]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        e.run(np.where(ids == ids[0, 0], VOCAB, ids), mask)
    with pytest.raises(ValueError, match="exceeds the model's 40 positions"):
        e.run(np.zeros((1, MAX_POS + 1), np.int64))
    with pytest.raises(ValueError, match="attends to no token"):
        e.run(ids, np.zeros_like(mask))
    # the mask holds 1 (token) and 0 (padding) only: weights, booleans-as-255 or -1 are refused, in either dtype
    for bad in (2, -1, 255):
        for dtype in (np.int64, np.int32):
            odd = mask.astype(dtype)
            odd[1, 2] = bad
            with pytest.raises(ValueError, match=rf"attention_mask\[1, 2\] = {bad}: .* 1 for a token and 0 for pad"):
                e.run(ids.astype(dtype), odd)
    with pytest.raises(ValueError, match="heads requested"):
        e.run(ids, mask, subnet=SubnetConfig((0,), (5,), (8,)))
    with pytest.raises(ValueError, match="out of range"):
        e.run(ids, mask, subnet=SubnetConfig((3,), (1,), (8,)))
    with pytest.raises(TypeError, match="SubnetConfig"):
        e.run(ids, mask, subnet={"layers": [0]})
    with pytest.raises(ValueError, match="threads"):
        e.run(ids, mask, threads=0)
    with pytest.raises(ValueError, match="out must have shape"):
        e.run(ids, mask, out=np.empty((2, 48), np.float32))
    with pytest.raises(TypeError, match="float32"):
        e.run(ids, mask, out=np.empty((3, 48), np.float64))
    np.testing.assert_array_equal(e.run(ids, mask), e.run(ids, mask))  # still fine after all that


# --- LoRA: unmerged (low-rank path beside the sliced base) == merged == torch W + s·B·A ------------


@pytest.fixture(scope="module")
def lora_adapters(tiny_model):
    g = torch.Generator().manual_seed(5)
    adapters = {}
    for i in range(3):
        for sub, (out, inp) in {"attention.self.query": (48, 48), "attention.output.dense": (48, 48),
                                "intermediate.dense": (80, 48), "output.dense": (48, 80)}.items():
            r = 4
            adapters[f"encoder.layer.{i}.{sub}"] = (torch.randn(r, inp, generator=g) * 0.2,
                                                  torch.randn(out, r, generator=g) * 0.2, 0.5)
    return adapters


def merged_model(model, adapters):
    merged = sliced_reference(model, SubnetConfig((0, 1, 2), (4,) * 3, (80,) * 3))
    with torch.no_grad():
        for name, (a, b, s) in adapters.items():
            merged.get_submodule(name).weight += s * (b @ a)
    return merged


@pytest.mark.parametrize("cfg", [SUBNETS[0], SUBNETS[3]], ids=lambda c: c.name)
def test_lora_unmerged_equals_merged_equals_torch(tiny_model, lora_adapters, tmp_path, cfg):
    unmerged = Engine.load(pack(tiny_model, tmp_path / "u.mlfs", lora=lora_adapters))
    merged = Engine.load(pack(tiny_model, tmp_path / "m.mlfs", lora=lora_adapters, merge_lora=True))
    assert unmerged.metadata["lora"]["merged"] is False and len(unmerged.metadata["lora"]["adapted"]) == 12
    assert merged.metadata["lora"]["merged"] is True
    ids, mask = batch()
    want = reference_output(sliced_reference(merged_model(tiny_model, lora_adapters), cfg), ids, mask)
    base = reference_output(sliced_reference(tiny_model, cfg), ids, mask)
    assert np.abs(want - base).max() > 1e-2  # the adapters matter
    np.testing.assert_allclose(unmerged.run(ids, mask, subnet=cfg), want, atol=1e-4)
    np.testing.assert_allclose(merged.run(ids, mask, subnet=cfg), want, atol=1e-4)


def test_lora_from_a_real_peft_model(tiny_model, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(7)
    peft_model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value", "intermediate.dense"], init_lora_weights=False)).eval()
    engine = Engine.load(pack(peft_model, tmp_path / "peft.mlfs", dtype="fp32"))
    assert len(engine.metadata["lora"]["adapted"]) == 3 * 3
    ids, mask = batch()
    with torch.no_grad():
        hidden = peft_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    m = torch.from_numpy(mask)[..., None].float()
    want = ((hidden * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(engine.run(ids, mask), want, atol=1e-4)
