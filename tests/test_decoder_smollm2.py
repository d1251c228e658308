"""The decoder engine on the real SmolLM2-135M and real news text: fp32 logits vs Hugging Face for
the full model and three sub-networks over 256 positions, and a 64-token greedy continuation
identical to `model.generate`."""

from __future__ import annotations

import pytest
import torch

from mlfs_edge.config import SubnetConfig, layers_for_depth

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlfs_edge.assets import smollm2_path
    from mlfs_edge.runtime import Engine, pack

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    engine = Engine.load(pack(model, tmp_path_factory.mktemp("smollm2") / "smollm2-fp32.mlfs", tokenizer=tokenizer))
    return model, tokenizer, engine


def _news_ids(tokenizer, n: int) -> list[int]:
    from mlfs_edge.data import load_text
    from mlfs_edge.lm import token_stream

    return token_stream(tokenizer, load_text("news").test, max_tokens=n)


def _subnets(arch) -> dict[str, SubnetConfig]:
    n, h, f, g = arch.num_layers, arch.num_heads, arch.intermediate, arch.group_size
    per_layer_heads = tuple(h if i % 2 == 0 else 2 * g for i in range(n))
    per_layer_mlp = tuple(f if i % 3 == 0 else f // 2 for i in range(n))
    return {
        "full": SubnetConfig.full(arch),
        "depth": SubnetConfig(layers_for_depth(n, 24), (h,) * 24, (f,) * 24),
        "width": SubnetConfig(tuple(range(n)), (2 * g,) * n, (f // 2,) * n),
        "per_layer": SubnetConfig(tuple(range(n)), per_layer_heads, per_layer_mlp),
    }


@pytest.mark.parametrize("which", ["full", "depth", "width", "per_layer"])
def test_logits_match_pytorch_on_news(smollm2, which):
    from mlfs_edge.eval.engine_lm import logit_agreement, torch_logits

    model, tokenizer, engine = smollm2
    cfg = _subnets(engine.arch)[which]
    ids = _news_ids(tokenizer, 256)
    agreement = logit_agreement(torch_logits(model, ids, cfg), engine.logits(ids, subnet=cfg, threads=2))
    assert agreement.positions == 256
    assert agreement.top1_agreement == 1.0, agreement
    assert agreement.max_rel_diff <= 1e-3, agreement


def test_greedy_continuation_identical_to_generate(smollm2):
    model, tokenizer, engine = smollm2
    prompt = _news_ids(tokenizer, 48)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=64, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = engine.generate(prompt, max_new_tokens=64, stop_tokens=[], threads=2)
    assert got == ref[0, len(prompt):].tolist()
