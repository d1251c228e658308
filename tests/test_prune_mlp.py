"""L2-norm structured MLP pruning on tiny random BERT / Llama models, and once on the real MiniLM."""

import copy

import pytest
import torch
from test_lm_eval import tiny_llama

from mlfs_edge.models import load_classifier
from mlfs_edge.prune.mlp import kept_channels, mlp_channel_order, prune_mlp


def _mlp_modules(model):
    """Per layer: (input projections, output projection) of the MLP, straight from the HF layout."""
    if model.config.model_type == "llama":
        return [([layer.mlp.gate_proj, layer.mlp.up_proj], layer.mlp.down_proj) for layer in model.model.layers]
    return [([layer.intermediate.dense], layer.output.dense) for layer in model.bert.encoder.layer]


def _spread_channel_norms(model):
    """Scale channels by distinct factors so the L2 ranking is clear-cut, and shuffled across layers."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, out in _mlp_modules(model):
            scale = torch.rand(out.weight.shape[1], generator=gen) * 3 + 0.1
            out.weight.mul_(scale)
    return model


def _hand_ranked_removed(model, ratio):
    """Per layer: the channels with the lowest L2 norm of all their weights (a direct computation)."""
    removed = []
    for ins, out in _mlp_modules(model):
        sq = out.weight.pow(2).sum(0)
        for lin in ins:
            sq = sq + lin.weight.pow(2).sum(1) + (lin.bias.pow(2) if lin.bias is not None else 0)
        f = sq.numel()
        removed.append(sorted(torch.argsort(sq)[: f - kept_channels(f, ratio)].tolist()))
    return removed


def _zeroed(model, removed):
    """The original model with the removed channels switched off (their down-projection columns zeroed)."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for (_, out), chans in zip(_mlp_modules(zeroed), removed, strict=True):
            out.weight[:, chans] = 0.0
    return zeroed


@pytest.fixture
def tiny_classifier(tiny_bert_dir):
    torch.manual_seed(0)
    model, tok = load_classifier(tiny_bert_dir, 3, ["a", "b", "c"])
    return _spread_channel_norms(model.eval()), tok


def test_bert_pruning_removes_the_lowest_norm_channels_and_equals_zeroing_them(tiny_classifier, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, tok = tiny_classifier
    original = copy.deepcopy(model.state_dict())
    removed = _hand_ranked_removed(model, 0.25)
    assert [sorted(order[48:]) for order in mlp_channel_order(model)] == removed
    pruned = prune_mlp(model, 0.25)
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())  # input untouched
    assert pruned.config.intermediate_size == 48 and pruned.config.model_type == "bert"
    for ins, out in _mlp_modules(pruned):
        assert ins[0].weight.shape == (48, 32) and ins[0].bias.shape == (48,) and out.weight.shape == (32, 48)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters()) == 3 * 16 * 65
    batch = tok(["a short sentence", "and another, a little longer one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = _zeroed(model, removed)(**batch).logits
        assert torch.allclose(pruned(**batch).logits, expected, atol=1e-5)
        # The check can fail: zeroing other channels gives other outputs.
        wrong = [[c for c in range(64) if c not in r][:16] for r in removed]
        hidden = pruned.bert(**batch).last_hidden_state
        assert torch.allclose(hidden, _zeroed(model, removed).bert(**batch).last_hidden_state, atol=1e-5)
        assert not torch.allclose(hidden, _zeroed(model, wrong).bert(**batch).last_hidden_state, atol=1e-2)
    pruned.save_pretrained(tmp_path / "p")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, expected, atol=1e-5)


def test_llama_pruning_cuts_gate_up_and_down_together(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _spread_channel_norms(tiny_llama(40))
    removed = _hand_ranked_removed(model, 0.5)
    pruned = prune_mlp(model, 0.5)
    for ins, out in _mlp_modules(pruned):
        assert [lin.weight.shape for lin in ins] == [(32, 32), (32, 32)] and out.weight.shape == (32, 32)
    x = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        expected = _zeroed(model, removed)(input_ids=x).logits
        assert torch.allclose(pruned(input_ids=x).logits, expected, atol=1e-5)
    pruned.save_pretrained(tmp_path / "p")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()
    assert reloaded.config.intermediate_size == 32
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=x).logits, expected, atol=1e-5)


def test_ratio_zero_keeps_the_function_and_bad_ratios_are_refused(tiny_classifier):
    model, tok = tiny_classifier
    batch = tok(["a sentence"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(prune_mlp(model, 0.0)(**batch).logits, model(**batch).logits, atol=1e-5)
    for bad in (1.0, -0.1, 1.5, "0.3", True):
        with pytest.raises(ValueError, match="pruning ratio"):
            kept_channels(64, bad)
    assert kept_channels(64, 0.99) == 1 and kept_channels(1536, 0.3) == 1075


@pytest.mark.slow
@pytest.mark.integration
def test_real_minilm_prunes_saves_reloads_and_recovers_by_distillation(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from mlfs_edge.assets import minilm_path
    from mlfs_edge.data import load_classification
    from mlfs_edge.prune.retrain import ClassifierTask, RetrainConfig, retrain

    data = load_classification("rotten_tomatoes")
    teacher, tok = load_classifier(minilm_path(), 2, data.label_names)
    teacher.eval()
    pruned = prune_mlp(teacher, 0.3)
    assert pruned.config.intermediate_size == 1075 and len(pruned.bert.encoder.layer) == 6
    removed = [sorted(order[1075:]) for order in mlp_channel_order(teacher)]
    batch = tok(data.test.texts[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = _zeroed(teacher, removed)(**batch).logits
        assert torch.allclose(pruned(**batch).logits, expected, atol=1e-4)
    pruned.save_pretrained(tmp_path / "p")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "p")
    task = ClassifierTask(tok)
    res = retrain(reloaded, task, data.train.subset(64), "l2psd", RetrainConfig(steps=2, batch_size=8, lr=1e-3),
                  teacher=teacher, progress=False)
    assert res.steps == 2 and all(loss >= 0 for loss in res.losses)
    assert res.trainable_params < sum(p.numel() for p in teacher.parameters())
