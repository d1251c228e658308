"""Re-training mechanics on tiny random models: the losses, the no-label path, LoRA, the schedule."""

import copy
import math

import pytest
import torch
from test_lm_eval import tiny_llama, word_tokenizer

from mlfs_edge.data import Split
from mlfs_edge.models import load_classifier
from mlfs_edge.prune.losses import answer_ce_loss, kd_loss
from mlfs_edge.prune.retrain import (
    METHODS,
    ClassifierTask,
    LabelWordTask,
    RetrainConfig,
    add_lora,
    batch_order,
    method_loss,
    retrain,
)

TEXTS = [f"good great fine film {i}" for i in range(12)] + [f"bad awful dull film {i}" for i in range(12)]
LABELS = [1] * 12 + [0] * 12
TOY = Split(TEXTS, LABELS)


@pytest.fixture
def bert_pair(tiny_bert_dir):
    """(student, teacher): two different tiny BERT classifiers with the MiniLM tokenizer."""
    torch.manual_seed(1)
    teacher, tok = load_classifier(tiny_bert_dir, 2, ["neg", "pos"])
    with torch.no_grad():
        teacher.classifier.weight.mul_(100.0)  # confident logits: a teacher worth distilling
    torch.manual_seed(2)
    student, _ = load_classifier(tiny_bert_dir, 2, ["neg", "pos"])
    return student, teacher.eval(), tok


def test_kd_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.0

    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    kls = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        p, q = softmax(t_row), softmax(s_row)
        kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))
    assert kd_loss(student, teacher, T).item() == pytest.approx(T * T * sum(kls) / 2, rel=1e-6)
    # A mask keeps only the chosen positions.
    assert kd_loss(student, teacher, T, torch.tensor([False, True])).item() == pytest.approx(T * T * kls[1], rel=1e-6)
    assert kd_loss(teacher, teacher, T).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(student, teacher, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(student, teacher[:, :2])


def test_answer_ce_loss_counts_only_answer_tokens():
    logits = torch.randn(1, 4, 5)
    ids = torch.tensor([[0, 1, 2, 3]])
    mask = torch.tensor([[False, False, True, True]])  # tokens 2 and 3 are the answer
    logp = torch.log_softmax(logits[0], -1)
    expected = -(logp[1, 2] + logp[2, 3]) / 2
    assert answer_ce_loss(logits, ids, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("task_kind", ["classifier", "label_words"])
def test_the_distillation_path_uses_no_labels(task_kind, bert_pair):
    if task_kind == "classifier":
        student, teacher, tok = bert_pair
        task = ClassifierTask(tok)
        texts = TEXTS[:6]
    else:
        tok = word_tokenizer()
        student, teacher = tiny_llama(len(tok), seed=1), tiny_llama(len(tok), seed=2)
        task = LabelWordTask(tok, ["person", "location", "number"])
        texts = ["who wrote hamlet ?", "what is the capital of france ?", "how many legs ?"] * 2
    student.train(False)  # no dropout: gradients must be comparable bit for bit
    real, other = [0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]
    garbage = [10**6, -7, 3, 99, -1, 5]  # not even valid class indices
    kd_real = _grads(student, method_loss("l2psd", task, student, teacher, texts, real, 2.0))
    kd_garbage = _grads(student, method_loss("l2psd", task, student, teacher, texts, garbage, 2.0))
    assert kd_real and _same(kd_real, kd_garbage)
    # The check can fail: the cross-entropy path does depend on the labels.
    ce_real = _grads(student, method_loss("l2pft", task, student, teacher, texts, real, 2.0))
    ce_other = _grads(student, method_loss("l2pft", task, student, teacher, texts, other, 2.0))
    assert not _same(ce_real, ce_other)


def test_lora_trains_only_adapters_and_merges_back_a_low_rank_change(bert_pair):
    student, teacher, tok = bert_pair
    before = copy.deepcopy(student.state_dict())
    wrapped = add_lora(copy.deepcopy(student), r=2)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    res = retrain(student, ClassifierTask(tok), TOY, "lora-kd",
                  RetrainConfig(steps=3, batch_size=8, lora_r=2, lora_lr=1e-2), teacher=teacher, progress=False)
    assert res.trainable_params == sum(wrapped.get_parameter(n).numel() for n in trainable)
    after = res.model.state_dict()
    assert after.keys() == before.keys()  # merged: a plain HF model again
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.endswith(".weight") and ("dense" in k or k.split(".")[-2] in ("query", "key", "value"))
                           for k in changed)
    for k in changed:
        assert torch.linalg.matrix_rank(after[k] - before[k], atol=1e-6) <= 2


def test_full_parameter_methods_learn_and_keep_word_embeddings_frozen(bert_pair):
    student, teacher, tok = bert_pair
    task = ClassifierTask(tok)
    emb = student.get_input_embeddings().weight.detach().clone()
    kl_before = method_loss("l2psd", task, student.eval(), teacher, TEXTS, LABELS, 2.0).item()
    res = retrain(copy.deepcopy(student), task, TOY, "l2psd",
                  RetrainConfig(steps=30, batch_size=8, lr=3e-3), teacher=teacher, progress=False)
    kl_after = method_loss("l2psd", task, res.model.eval(), teacher, TEXTS, LABELS, 2.0).item()
    assert kl_after < 0.5 * kl_before, (kl_before, kl_after)  # the student moved towards the teacher
    assert torch.equal(res.model.get_input_embeddings().weight, emb)
    assert res.trainable_params == sum(p.numel() for p in student.parameters()) - emb.numel()
    ce = retrain(copy.deepcopy(student), task, TOY, "l2pft", RetrainConfig(steps=30, batch_size=8, lr=3e-3),
                 progress=False)
    assert task.evaluate(ce.model, TOY)["accuracy"] == 1.0


def test_every_method_sees_the_same_batches():
    lengths = [len(t) for t in TEXTS]
    order = batch_order(lengths, steps=7, batch_size=8, seed=0)
    assert order == batch_order(lengths, steps=7, batch_size=8, seed=0)
    assert len(order) == 7 and all(len(b) == 8 for b in order)
    assert sorted(i for b in order[:3] for i in b) == list(range(24))  # epoch 1 covers every example once


def test_bad_input_is_refused(bert_pair):
    student, _, tok = bert_pair
    with pytest.raises(ValueError, match="unknown re-training method"):
        retrain(student, ClassifierTask(tok), TOY, "magic", progress=False)
    with pytest.raises(ValueError, match="teacher"):
        retrain(student, ClassifierTask(tok), TOY, "l2psd", RetrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="steps"):
        RetrainConfig(steps=0)
    assert set(METHODS) == {"l2pft", "l2psd", "lora-sft", "lora-kd"}
