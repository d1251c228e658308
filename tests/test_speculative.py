"""Self-speculative decoding on a tiny random Llama: a sub-network of the same file drafts, the target
verifies. Greedy output must be token-for-token plain decoding's (whatever the draft, k, cache
sharing or stop rule); sampled tokens must follow the target's distribution (a goodness-of-fit test
against the exact conditional probabilities); bad drafts are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM

from mlfs_edge.config import SubnetConfig
from mlfs_edge.runtime import Engine, frequency_order, pack

VOCAB, LAYERS = 96, 4


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, Engine]:
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, rope_theta=5000.0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # peakier next-token distributions than a random init gives: drafts then agree often
        model.model.embed_tokens.weight.mul_(6.0)
    out = tmp_path_factory.mktemp("speculative")
    engines = {dtype: Engine.load(pack(model, out / f"tiny-{dtype}.mlfs", dtype=dtype)) for dtype in ("fp32", "int8")}
    # the same model with its vocabulary stored in another order (an elastic head for drafts)
    order = frequency_order(np.random.default_rng(5).zipf(1.3, 4000) % VOCAB, VOCAB)
    engines["fp32-ordered"] = Engine.load(pack(model, out / "tiny-ordered.mlfs", vocab_order=order,
                                               vocab_order_source="test"))
    return engines


def _prefix(depth: int, heads: int = 4, mlp: int = 96) -> SubnetConfig:
    return SubnetConfig(tuple(range(depth)), (heads,) * depth, (mlp,) * depth)


PROMPT = [5, 17, 42, 8, 77, 3, 21]

DRAFTS = {
    "depth prefix (shares the cache)": _prefix(2),
    "narrower (own cache)": _prefix(3, heads=2, mlp=48),
    "the target itself": _prefix(LAYERS),
    "one layer, narrow": _prefix(1, heads=2, mlp=32),
}


@pytest.mark.parametrize("draft", list(DRAFTS), ids=list(DRAFTS))
@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_greedy_speculation_is_plain_decoding(engines, draft, dtype):
    engine = engines[dtype]
    plain = engine.generate(PROMPT, max_new_tokens=60, stop_tokens=[])
    for k, adaptive in ((1, False), (3, False), (8, False), (4, True)):
        stream = engine.stream(PROMPT, max_new_tokens=60, stop_tokens=[], draft=DRAFTS[draft], draft_k=k,
                               adaptive=adaptive)
        assert list(stream) == plain, (draft, k, adaptive)
        stats = stream.speculation
        assert stats["shared_cache"] == (draft in ("depth prefix (shares the cache)", "the target itself"))
        if not adaptive:
            assert stats["rounds"] > 0 and stats["drafted"] >= stats["accepted"]
    # the target as its own draft agrees on every token: 1 prefill token + 8 rounds of 4 drafts + 1
    if draft == "the target itself":
        stream = engine.stream(PROMPT, max_new_tokens=41, stop_tokens=[], draft=DRAFTS[draft], draft_k=4,
                               adaptive=False)
        list(stream)
        assert stream.speculation["acceptance_rate"] == 1.0 and stream.speculation["tokens_per_round"] == 5.0


def test_speculation_keeps_penalties_stops_caches_threads_and_rollback(engines):
    engine = engines["fp32"]
    draft = DRAFTS["depth prefix (shares the cache)"]
    kw = {"max_new_tokens": 50, "repetition_penalty": 1.3, "cache_dtype": "fp16", "threads": 2}
    plain = engine.generate(PROMPT, stop_tokens=[], **kw)
    assert engine.generate(PROMPT, stop_tokens=[], draft=draft, draft_k=5, adaptive=False, **kw) == plain
    # a stop token inside an accepted run ends the output there, as plain decoding would
    stop = plain[20]
    expected = plain[:plain.index(stop) + 1]
    assert engine.generate(PROMPT, stop_tokens=[stop], draft=draft, draft_k=6, adaptive=False, **kw) == expected
    # max_new_tokens is exact even when a round could emit more
    for n in (1, 2, 3, 7):
        assert engine.generate(PROMPT, stop_tokens=[], draft=draft, draft_k=8, adaptive=False,
                               **{**kw, "max_new_tokens": n}) == plain[:n]
    # the model's last position ends generation exactly like plain decoding
    long_prompt = (PROMPT * 18)[:120]
    assert (engine.generate(long_prompt, max_new_tokens=8, stop_tokens=[], draft=draft, draft_k=4, adaptive=False)
            == engine.generate(long_prompt, max_new_tokens=8, stop_tokens=[]))
    # rollback mid-way drops pending draft tokens and the draft's cache rows
    stream = engine.stream(PROMPT, stop_tokens=[], draft=DRAFTS["narrower (own cache)"], draft_k=4, adaptive=False,
                           **kw)
    first = [next(stream) for _ in range(11)]
    stream.rollback(len(PROMPT) + 5)
    assert first[:5] + list(stream) == plain


def _exact(engine: Engine, ids: list[int], temperature: float, top_k: int, subnet: SubnetConfig | None = None):
    logits = engine.logits(ids, subnet=subnet)[-1].astype(np.float64) / temperature
    keep = np.argsort(-logits, kind="stable")[:top_k]
    p = np.zeros(VOCAB)
    p[keep] = np.exp(logits[keep] - logits[keep].max())
    return p / p.sum()


def _fit_pvalue(counts: np.ndarray, p: np.ndarray) -> float:
    """Chi-square goodness of fit of the token counts to p; 0 when a token p excludes was drawn."""
    support = p > 0
    if counts[~support].sum() > 0:
        return 0.0
    observed, expected = counts[support], p[support] * counts.sum()
    # merge rare categories so every expected count is >= 5 (the chi-square approximation)
    order = np.argsort(expected)
    obs, exp, o_acc, e_acc = [], [], 0.0, 0.0
    for i in order:
        o_acc, e_acc = o_acc + observed[i], e_acc + expected[i]
        if e_acc >= 5:
            obs.append(o_acc), exp.append(e_acc)
            o_acc = e_acc = 0.0
    if e_acc and exp:
        obs[-1] += o_acc
        exp[-1] += e_acc
    return float(chisquare(obs, exp).pvalue)


def test_speculative_sampling_keeps_the_target_distribution(engines):
    """Tokens 2 and 3 (1 comes from the prefill) are drawn through the acceptance rule, the residual
    draw and the bonus token: their frequencies must fit the target's exact conditional
    probabilities, and must NOT fit the draft's (so a rule that kept drafts blindly would fail)."""
    engine = engines["fp32"]
    draft = DRAFTS["one layer, narrow"]
    temperature, top_k, runs = 0.8, 12, 3000
    samples = np.array([engine.generate(PROMPT, max_new_tokens=3, stop_tokens=[], temperature=temperature,
                                        top_k=top_k, seed=seed, draft=draft, draft_k=2, adaptive=False)
                        for seed in range(runs)])
    t1 = np.bincount(samples[:, 0], minlength=VOCAB).argmax()
    rows = samples[samples[:, 0] == t1]
    assert len(rows) > 500
    second = np.bincount(rows[:, 1], minlength=VOCAB)
    context = [*PROMPT, int(t1)]
    assert _fit_pvalue(second, _exact(engine, context, temperature, top_k)) > 1e-3
    assert _fit_pvalue(second, _exact(engine, context, temperature, top_k, subnet=draft)) < 1e-6
    t2 = np.bincount(rows[:, 1], minlength=VOCAB).argmax()
    third_rows = rows[rows[:, 1] == t2]
    third = np.bincount(third_rows[:, 2], minlength=VOCAB)
    assert len(third_rows) > 200
    assert _fit_pvalue(third, _exact(engine, [*context, int(t2)], temperature, top_k)) > 1e-3


def test_bad_drafts_are_one_line_errors(engines):
    engine = engines["fp32"]
    with pytest.raises(ValueError, match="key/value groups"):
        engine.generate(PROMPT, draft=SubnetConfig((0,), (3,), (96,)))
    with pytest.raises(ValueError, match="layer"):
        engine.generate(PROMPT, draft=SubnetConfig((9,), (4,), (96,)))
    with pytest.raises(ValueError, match="draft_k must be an integer"):
        engine.generate(PROMPT, draft=_prefix(1), draft_k=0)
    with pytest.raises(ValueError, match="must not exceed"):
        engine.generate(PROMPT, draft=_prefix(1), draft_k=9, draft_k_max=8)
    with pytest.raises(TypeError, match="SubnetConfig"):
        engine.generate(PROMPT, draft="depth=1")  # type: ignore[arg-type]


def test_expected_speedup_model():
    from mlfs_edge.runtime import expected_speedup

    # a draft that is never right only costs time; a free, always-right one gains k_max + 1 per verify
    assert expected_speedup(0.0, 0.3, 1.0)[0] < 1.0
    speed, k = expected_speedup(1.0, 0.0, 1.0, k_max=6)
    assert k == 6 and speed == pytest.approx(1 + sum(0.999 ** i for i in range(1, 7)), rel=1e-9)
    # the rule of thumb: ~80 % agreement at <= 30 % of the cost pays about 1.5x
    speed, k = expected_speedup(0.8, 0.3, 1.1)
    assert 1.3 < speed < 1.8 and 2 <= k <= 5


def test_choose_draft_measures_acceptance_and_cost(engines, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFS_EDGE_CACHE", str(tmp_path))
    engine = engines["fp32"]
    ids = np.random.default_rng(0).integers(0, VOCAB, size=64)
    candidates = [_prefix(1), _prefix(2), _prefix(LAYERS), _prefix(3, heads=2, mlp=48)]
    best, rows = engine.choose_draft(candidates, ids, threads=1)
    assert [r.draft for r in rows if r.draft == _prefix(LAYERS)] == []  # the target is no draft of itself
    assert len(rows) == 3 and all(0.0 <= r.acceptance <= 1.0 and r.cost > 0 and 1 <= r.k <= 8 for r in rows)
    assert rows == sorted(rows, key=lambda r: -r.speedup)
    assert best is None or best.speedup >= 1.05
    for r in rows:
        assert r.acceptance == pytest.approx(engine.draft_agreement(r.draft, ids))
    assert (tmp_path / "draft_acceptance.json").is_file()  # a second call reads the cache
    assert engine.choose_draft(candidates, ids)[1][0].acceptance in {r.acceptance for r in rows}
    with pytest.raises(ValueError, match="too short"):
        engine.choose_draft(candidates, ids[:8])
    with pytest.raises(ValueError, match="no draft candidate"):
        engine.choose_draft([_prefix(LAYERS)], ids)


def test_frequency_order():
    assert frequency_order([3, 3, 1, 3, 1, 0], 5) == [3, 1, 0, 2, 4]  # by count, ties and unseen by id


def test_elastic_vocabulary_head(engines, tmp_path):
    plain, ordered = engines["fp32"], engines["fp32-ordered"]
    assert ordered.vocab_ordered and not plain.vocab_ordered
    assert ordered.metadata["vocab_order"] == "test"
    ids = np.random.default_rng(2).integers(0, VOCAB, size=20)
    full = plain.logits(ids)
    np.testing.assert_allclose(ordered.logits(ids), full, rtol=1e-5, atol=1e-5)  # ids in and out unchanged
    assert ordered.generate(PROMPT, max_new_tokens=30, stop_tokens=[]) == plain.generate(
        PROMPT, max_new_tokens=30, stop_tokens=[])
    # a head of 32 rows scores the 32 most frequent tokens, -inf elsewhere
    order = np.array(ordered._core.vocab_order)
    part = ordered.logits(ids, vocab=32)
    assert np.isneginf(part[:, order[32:]]).all()
    np.testing.assert_allclose(part[:, order[:32]], full[:, order[:32]], rtol=1e-5, atol=1e-5)
    # speculation with the draft scoring 32 or 64 tokens: greedy output still plain decoding's
    want = plain.generate(PROMPT, max_new_tokens=40, stop_tokens=[])
    for vocab in (32, 64):
        for draft in (_prefix(2), _prefix(LAYERS)):
            stream = ordered.stream(PROMPT, max_new_tokens=40, stop_tokens=[], draft=draft, draft_k=3,
                                    adaptive=False, draft_vocab=vocab)
            assert list(stream) == want and stream.speculation["rounds"] > 0
    _, rows = ordered.choose_draft([(_prefix(LAYERS), 32), (_prefix(1), None)], ids.tolist() * 2,
                                   use_cache=False)
    assert {r.name for r in rows} == {"L4-H4-F96+V32", "L1-H4-F96"}
    with pytest.raises(ValueError, match="multiple of 32"):
        ordered.generate(PROMPT, draft=_prefix(1), draft_vocab=33)
    with pytest.raises(ValueError, match="multiple of 32"):
        ordered.logits(ids, vocab=40)


def test_pack_refuses_a_bad_vocab_order(tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="permutation of the 64 token ids"):
        pack(model, tmp_path / "bad.mlfs", vocab_order=[0] * 64)
    with pytest.raises(ValueError, match="permutation"):
        pack(model, tmp_path / "short.mlfs", vocab_order=list(range(63)))
    assert not (tmp_path / "bad.mlfs").exists()


def test_parse_draft_is_a_prefix_of_the_target():
    from mlfs_edge.config import ArchSpec

    arch = ArchSpec(family="llama", num_layers=6, hidden=64, num_heads=4, head_dim=16, intermediate=96,
                    vocab_size=VOCAB, num_kv_heads=2)
    target = SubnetConfig((0, 2, 3, 5), (4, 4, 2, 4), (96, 64, 96, 32))
    assert SubnetConfig.parse_draft("depth=2", target, arch) == SubnetConfig((0, 2), (4, 4), (96, 64))
    assert SubnetConfig.parse_draft("d=3,h=2", target, arch) == SubnetConfig((0, 2, 3), (2, 2, 2), (96, 64, 96))
    assert SubnetConfig.parse_draft('{"layers": [1], "heads": [2], "mlp": [32]}', target, arch).layers == (1,)
    with pytest.raises(ValueError, match="deeper than its target"):
        SubnetConfig.parse_draft("depth=5", target, arch)
