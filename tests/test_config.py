import random

import pytest

from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig, layers_for_depth

BERT = ArchSpec("bert", num_layers=6, hidden=384, num_heads=12, num_kv_heads=12, head_dim=32,
                intermediate=1536, vocab_size=30522)
LLAMA = ArchSpec("llama", num_layers=30, hidden=576, num_heads=9, num_kv_heads=3, head_dim=64,
                 intermediate=1536, vocab_size=49152, gated_mlp=True, bias=False)


def test_full_config_covers_the_model_and_counts_bert_layer_params_exactly():
    from transformers import BertConfig, BertModel

    full = SubnetConfig.full(BERT)
    assert full.layers == tuple(range(6)) and full.heads == (12,) * 6 and full.mlp == (1536,) * 6
    assert full.param_fraction(BERT) == 1.0
    model = BertModel(BertConfig(hidden_size=384, num_hidden_layers=1, num_attention_heads=12,
                                 intermediate_size=1536))
    assert BERT.layer_params(12, 1536) == sum(p.numel() for p in model.encoder.layer[0].parameters())


def test_llama_layer_params_match_transformers():
    from transformers import LlamaConfig, LlamaModel

    model = LlamaModel(LlamaConfig(hidden_size=576, num_hidden_layers=1, num_attention_heads=9,
                                   num_key_value_heads=3, head_dim=64, intermediate_size=1536, vocab_size=32))
    assert LLAMA.layer_params(9, 1536) == sum(p.numel() for p in model.layers[0].parameters())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layers": (0, 7), "heads": (12, 12), "mlp": (8, 8)}, "out of range"),
    ({"layers": (0,), "heads": (13,), "mlp": (8,)}, "13 heads"),
    ({"layers": (0,), "heads": (12,), "mlp": (2000,)}, "exceeds"),
])
def test_impossible_configs_raise_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubnetConfig(**kwargs).validate(BERT)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layers": (), "heads": (), "mlp": ()}, "at least one layer"),
    ({"layers": (2, 1), "heads": (1, 1), "mlp": (1, 1)}, "strictly increasing"),
    ({"layers": (0, 1), "heads": (1,), "mlp": (1, 1)}, "one entry per kept layer"),
    ({"layers": (0,), "heads": (0,), "mlp": (4,)}, "at least one head"),
    ({"layers": (0,), "heads": (1.5,), "mlp": (4,)}, "integers"),
])
def test_malformed_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubnetConfig(**kwargs)


def test_gqa_heads_must_be_whole_kv_groups():
    with pytest.raises(ValueError, match="key/value groups"):
        SubnetConfig((0,), (4,), (64,)).validate(LLAMA)
    SubnetConfig((0,), (6,), (64,)).validate(LLAMA)


def test_json_and_toml_round_trip():
    cfg = SubnetConfig((0, 2, 5), (8, 6, 4), (768, 512, 384))
    assert SubnetConfig.from_json(cfg.to_json()) == cfg
    assert SubnetConfig.from_toml(cfg.to_toml()) == cfg
    assert SubnetConfig.from_toml("[subnet]\n" + cfg.to_toml()) == cfg
    with pytest.raises(ValueError, match="unknown: width"):
        SubnetConfig.from_dict({"layers": [0], "heads": [1], "mlp": [1], "width": 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        SubnetConfig.from_json("{layers")


def test_parse_short_form_files_and_errors(tmp_path):
    assert SubnetConfig.parse("full", BERT) == SubnetConfig.full(BERT)
    cfg = SubnetConfig.parse("depth=3,heads=6,mlp=768", BERT)
    assert cfg.layers == (0, 2, 5) and cfg.heads == (6,) * 3 and cfg.mlp == (768,) * 3
    assert SubnetConfig.parse("h=6", BERT).depth == 6
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert SubnetConfig.parse(str(path), BERT) == cfg
    with pytest.raises(ValueError, match="cannot parse"):
        SubnetConfig.parse("depth=four", BERT)
    with pytest.raises(ValueError, match="depth must be between"):
        SubnetConfig.parse("depth=9", BERT)
    with pytest.raises(ValueError, match="does not exist"):
        SubnetConfig.parse(str(tmp_path / "missing.json"), BERT)


@pytest.mark.parametrize("key", ["depth", "heads", "mlp"])
@pytest.mark.parametrize("value", [0, -1])
def test_zero_or_negative_is_an_error_not_the_full_value(key, value):
    # Only None means "the model's own value": 0 used to slip through `x or full` as the full width.
    with pytest.raises(ValueError, match=rf"{key}={value} is not a size|depth must be between"):
        SubnetConfig.uniform(BERT, **{key: value})
    with pytest.raises(ValueError, match=rf"{key}={value} is not a size|depth must be between 1 and 6, got {value}"):
        SubnetConfig.parse(f"depth=3,heads=12,mlp=768,{key}={value}", BERT)
    with pytest.raises(ValueError, match="must be an integer"):
        SubnetConfig.uniform(BERT, **{key: 2.0})
    # None (or leaving the key out) is the model's own value
    assert SubnetConfig.uniform(BERT, **{key: None}) == SubnetConfig.full(BERT)
    assert SubnetConfig.parse("heads=6", BERT).mlp == (BERT.intermediate,) * BERT.num_layers


def test_layers_for_depth_policies():
    assert layers_for_depth(6, 6) == tuple(range(6))
    assert layers_for_depth(6, 3) == (0, 2, 5)
    assert layers_for_depth(6, 2) == (0, 5)
    assert layers_for_depth(6, 3, "first") == (0, 1, 2)
    for d in range(1, 13):
        assert len(layers_for_depth(12, d)) == d
    with pytest.raises(ValueError):
        layers_for_depth(6, 0)


def test_search_space_sampling_stays_inside_and_is_seeded():
    space = SearchSpace.default(BERT)
    assert space.largest() == SubnetConfig.full(BERT)
    assert space.smallest().depth == 3 and space.smallest().heads[0] == 3 and space.smallest().mlp[0] == 384
    a = [space.sample(random.Random(7)) for _ in range(3)]
    b = [space.sample(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    for _ in range(50):
        assert space.contains(space.sample(rng))
        assert space.sample(rng, vary_depth=False).depth == 6
    fracs = [c.param_fraction(BERT) for c in space.uniform_configs()]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0 and fracs[0] < 0.15
    assert not space.contains(SubnetConfig((0,), (12,), (1536,)))


def test_search_space_rejects_impossible_spaces():
    with pytest.raises(ValueError, match="depths"):
        SearchSpace(BERT, (0, 6), (12,), (1536,))
    with pytest.raises(ValueError, match="head counts"):
        SearchSpace(LLAMA, (30,), (4, 9), (1536,))
    space = SearchSpace.default(LLAMA)
    assert all(h % 3 == 0 for h in space.heads)
    assert SearchSpace.from_dict(LLAMA, space.to_dict()) == space


def test_arch_of_an_extracted_narrow_head_bert_keeps_the_head_size():
    from mlfs_edge.supernet.extract import MlfsBertConfig

    cfg = MlfsBertConfig(attention_head_size=32, hidden_size=384, num_attention_heads=6, num_hidden_layers=2,
                         intermediate_size=768)
    arch = ArchSpec.from_hf_config(cfg)
    assert (arch.num_heads, arch.head_dim, arch.hidden) == (6, 32, 384)
