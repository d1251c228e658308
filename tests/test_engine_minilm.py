"""Parity on the real all-MiniLM-L6-v2 with real Rotten Tomatoes sentences: the engine vs PyTorch
running the same sub-network, for the full network and three sub-networks, in fp32 / fp16 / int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlfs_edge.config import SubnetConfig

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SUBNETS = {
    "full": None,
    "half-width": dict(heads=6, mlp=768),
    "depth4": dict(depth=4, heads=9, mlp=1152),
    "per-layer": SubnetConfig((0, 2, 3, 5), (12, 6, 9, 3), (1536, 512, 1024, 384)),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoModel, AutoTokenizer

    from mlfs_edge.assets import minilm_path
    from mlfs_edge.config import ArchSpec
    from mlfs_edge.data import load_classification
    from mlfs_edge.runtime import Engine, pack

    path = minilm_path()
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = load_classification("rotten_tomatoes").test.texts[:12]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    assert (mask == 0).any(), "the batch should contain padding"
    d = tmp_path_factory.mktemp("minilm")
    engines = {dt: Engine.load(pack(model, d / f"minilm-{dt}.mlfs", dtype=dt)) for dt in ("fp32", "fp16", "int8")}
    arch = ArchSpec.from_hf_config(model.config)
    return model, engines, ids, mask, arch


def cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("name", list(SUBNETS))
def test_engine_matches_pytorch_on_real_minilm(setup, name):
    from mlfs_edge.runtime.reference import reference_output, sliced_reference

    model, engines, ids, mask, arch = setup
    spec = SUBNETS[name]
    cfg = spec if isinstance(spec, SubnetConfig) else SubnetConfig.uniform(arch, **(spec or {}))
    with torch.no_grad():
        want = reference_output(sliced_reference(model, cfg), ids, mask)
    fp32 = engines["fp32"].run(ids, mask, subnet=cfg)
    fp16 = engines["fp16"].run(ids, mask, subnet=cfg)
    int8 = engines["int8"].run(ids, mask, subnet=cfg, threads=2)
    diff, c16, c8 = np.abs(fp32 - want).max(), cosine(fp16, want).min(), cosine(int8, want).min()
    print(f"{cfg.name}: fp32 max|diff| {diff:.2e}, fp16 min cos {c16:.5f}, int8 min cos {c8:.5f}")
    assert diff <= 1e-4
    assert c16 >= 0.999
    assert c8 >= 0.99
