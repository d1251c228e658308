"""The MLFS training options issue 16's ablation measures: intermediate-layer feature mapping,
sampling sizes evenly in parameters or toward the palette, and teacher-labelled augmentation — each
unit-checked, then all together through a tiny run that must resume bit for bit."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
import torch
from test_mlfs import tiny_config, tiny_teacher, toy_csv, train_straight_and_killed  # noqa: F401 (fixtures)

from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.train.augment import NEWS_WORDS, edited_sentences, news_sentences, teacher_labels
from mlfs_edge.train.mlfs import MLFSConfig
from mlfs_edge.train.objective import feature_pairs
from mlfs_edge.train.sampling import sample_by_params, sandwich

MINILM = ArchSpec(family="bert", num_layers=6, hidden=384, num_heads=12, num_kv_heads=12, head_dim=32,
                  intermediate=1536, vocab_size=30522)


def minilm_space() -> SearchSpace:
    return SearchSpace(MINILM, (3, 4, 5, 6), (6, 9, 12), (384, 768, 1152, 1536))


def test_feature_pairs_map_a_kept_layer_to_the_block_it_replaces():
    full = tuple(range(6))
    assert feature_pairs((0, 2, 5), full, "same") == [(0, 0), (2, 2), (5, 5)]
    # layer 0 stands for teacher layers 0-1, layer 2 for 2-4, the last one for the teacher's output
    assert feature_pairs((0, 2, 5), full, "replaced") == [(0, 1), (2, 4), (5, 5)]
    assert feature_pairs((0, 1, 2), full, "replaced") == [(0, 0), (1, 1), (2, 5)]  # a prefix: its top = teacher's
    assert feature_pairs(full, full, "replaced") == feature_pairs(full, full, "same")  # full depth: no change
    assert feature_pairs((5,), full, "replaced") == [(5, 5)]
    assert feature_pairs((0, 3), (0, 2, 4), "replaced") == [(0, 2), (3, 4)]  # a shallower teacher: its layers only
    assert feature_pairs((1, 3), (0, 2, 4), "same") == []
    with pytest.raises(ValueError, match="unknown feature map 'next'"):
        feature_pairs((0,), full, "next")


def _quarters(space: SearchSpace, draws: list[SubnetConfig]) -> list[float]:
    counts = sorted({c.layer_params(space.arch) for c in space.uniform_configs()})
    lo, hi = counts[0], counts[-1]
    bins = Counter(min(3, int(4 * (c.layer_params(space.arch) - lo) / (hi - lo))) for c in draws)
    return [bins[b] / len(draws) for b in range(4)]


def test_sampling_by_params_spreads_sizes_evenly():
    space = minilm_space()
    rng = random.Random(0)
    by_params = [sample_by_params(space, rng, vary_depth=True) for _ in range(4000)]
    by_choices = [space.sample(random.Random(i), vary_depth=True) for i in range(4000)]
    assert all(space.contains(c) for c in by_params)
    assert {c.layer_params(MINILM) for c in by_params} >= {space.smallest().layer_params(MINILM),
                                                            space.largest().layer_params(MINILM)}
    even, uneven = _quarters(space, by_params), _quarters(space, by_choices)
    assert max(abs(q - 0.25) for q in even) < 0.05, even
    assert max(abs(q - 0.25) for q in uneven) > 0.08, uneven  # drawing each dimension piles up in the middle
    # a widths-only stage keeps full depth; the same rng draws the same sub-networks
    assert {c.depth for c in (sample_by_params(space, rng, vary_depth=False) for _ in range(200))} == {6}
    assert [sample_by_params(space, random.Random(7), True) for _ in range(3)] == \
        [sample_by_params(space, random.Random(7), True) for _ in range(3)]
    # the sandwich with neither option draws exactly what it always drew (old runs resume bit for bit)
    old_rule = random.Random("0/1/3")
    assert sandwich(space, random.Random("0/1/3"), True, 2) == \
        [space.largest(), space.smallest(), space.sample(old_rule, True), space.sample(old_rule, True)]


def test_palette_share_fills_random_slots_with_palette_members():
    space = minilm_space()
    palette = (SubnetConfig.parse("depth=4,heads=9,mlp=768", MINILM), SubnetConfig.parse("depth=6,heads=6,mlp=768",
                                                                                             MINILM))
    steps = [sandwich(space, random.Random(s), True, 2, palette, 1.0) for s in range(40)]
    assert all(c in palette for step in steps for c in step[2:])
    half = [c for s in range(400) for c in sandwich(space, random.Random(s), True, 1, palette, 0.5)[2:]]
    assert 0.4 < sum(c in palette for c in half) / len(half) < 0.65
    # a widths-only stage only favours full-depth members
    assert {c for s in range(40) for c in sandwich(space, random.Random(s), False, 1, palette, 1.0)[2:]} == \
        {palette[1]}


def test_recipe_config_errors_are_clear(tmp_path, tiny_bert_dir, toy_csv):  # noqa: F811
    base = tiny_config(tmp_path, tiny_bert_dir, toy_csv)
    for extra, message in [({"sampling": "even"}, "sampling must be choices or params"),
                           ({"palette_share": 1.5}, r"palette_share must be in \[0, 1\]"),
                           ({"palette_share": 0.5, "drafts": ["depth=2"], "draft_share": 0.5}, "set one"),
                           ({"augment": "wordnet"}, "augment must be none, edit, news"),
                           ({"augment": "edit", "augment_ratio": 0}, r"augment_ratio .* must be in \(0, 20\]"),
                           ({"loss": {"feature_map": "next"}}, "feature_map must be same or replaced")]:
        with pytest.raises(ValueError, match=message):
            MLFSConfig.from_dict({**base, **extra})


def test_edited_and_news_sentences():
    texts = ["a truly great film with a fine cast", "dull and far too long", "not bad at all for a sequel"]
    edited, source = edited_sentences(texts, 7, seed=3)
    assert len(edited) == len(source) == 7 and set(source) == {0, 1, 2}
    assert edited == edited_sentences(texts, 7, seed=3)[0] != edited_sentences(texts, 7, seed=4)[0]
    assert sum(e != texts[i] for e, i in zip(edited, source, strict=True)) >= 6  # a swap of equal words may not show
    vocabulary = {w for t in texts for w in t.split()}
    assert all(set(e.split()) <= vocabulary for e in edited)
    news = news_sentences(50, seed=0)
    assert len(set(news)) == 50 and all(NEWS_WORDS[0] <= len(s.split()) <= NEWS_WORDS[1] for s in news)
    assert news == news_sentences(50, seed=0) != news_sentences(50, seed=1)
    with pytest.raises(ValueError, match="lower augment_ratio"):
        news_sentences(10_000_000, seed=0)
    with pytest.raises(ValueError, match="needs training sentences"):
        edited_sentences([], 3, seed=0)


def test_teacher_labels_are_the_classifier_predictions(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).train()
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [f"sentence number {i} about films" + " and more" * (i % 3) for i in range(10)]
    labels = teacher_labels(model, tok, texts, max_length=32, progress=False)
    assert model.training  # its mode is restored
    with torch.no_grad():
        want = model.eval()(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    assert labels == want


def test_mlfs_with_every_recipe_option_resumes_bit_for_bit(tmp_path, tiny_bert_dir, toy_csv, tiny_teacher,  # noqa: F811
                                                           capsys):
    from test_mlfs import adapters

    from mlfs_edge.data import load_classification
    from mlfs_edge.train.mlfs import train_mlfs

    extra = {"sampling": "params", "palette_share": 0.5, "augment": "edit", "augment_ratio": 0.5,
             "loss": {"gamma": 0.5, "feature_dim": 16, "feature_map": "replaced"}}
    straight = MLFSConfig.from_dict(tiny_config(tmp_path / "a", tiny_bert_dir, toy_csv, str(tiny_teacher), **extra))
    resumed = MLFSConfig.from_dict(tiny_config(tmp_path / "b", tiny_bert_dir, toy_csv, str(tiny_teacher), **extra))
    capsys.readouterr()
    summary, _ = train_straight_and_killed(straight, resumed)  # augmentation and sampling rebuilt alike on resume
    out = capsys.readouterr().out
    n = len(load_classification(str(toy_csv)).train)
    line = next(ln for ln in out.splitlines() if ln.startswith("augment: "))
    found = re.fullmatch(r"augment: (\d+) edit examples labelled by the teacher \(((?:(?:neg|pos) \d+(?:, )?)+); "
                         r"(\d+) training examples\); the teacher keeps the source sentence's label on [\d.]+ %", line)
    assert found, line  # the teacher's labels per class, by name
    per_class = sum(int(part.split()[1]) for part in found.group(2).split(", "))
    assert int(found.group(1)) == round(0.5 * n) == per_class and int(found.group(3)) == n
    assert f"(classification, {n + round(0.5 * n)} training examples)" in out
    assert summary["config"]["sampling"] == "params" and summary["config"]["loss"]["feature_map"] == "replaced"
    # the options change what is learned: the same run without them ends elsewhere
    plain = MLFSConfig.from_dict(tiny_config(tmp_path / "c", tiny_bert_dir, toy_csv, str(tiny_teacher)))
    train_mlfs(plain, progress=False)
    a, b = adapters(tmp_path / "a" / "run"), adapters(tmp_path / "c" / "run")
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)


def test_causal_lm_refuses_augmentation(tmp_path):
    from mlfs_edge.train.tasks import causal_lm_setup

    cfg = MLFSConfig(model="smollm2", data="news", out=str(tmp_path / "run"), augment="edit",
                     stages=(), task="causal_lm")
    with pytest.raises(ValueError, match="augment labels extra text with a classifier teacher"):
        causal_lm_setup(cfg)
