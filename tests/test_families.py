"""Every family × stage cell of the support table (`mlfs_edge.families`), on the tiny random model of
each family (tests/families.py): a "works" cell runs the stage and checks its result, a "refused"
cell checks the one-line error at the stage's first call. The parametrisation is read from the
table, so the table cannot claim what is not tested."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from families import FAMILIES as CASES
from families import VOCAB, FamilyCase, build

from mlfs_edge import families
from mlfs_edge.config import SearchSpace, SubnetConfig

BY_NAME = {c.name: c for c in CASES}


def _cells(works: bool) -> list[tuple[FamilyCase, str]]:
    out = []
    for fam in families.FAMILIES:
        for stage in families.STAGES:
            if (fam.support(stage) is None) == works:
                out.append(pytest.param(BY_NAME[fam.name], stage, id=f"{fam.name}-{stage}",
                                        marks=[pytest.mark.slow] if works and stage == "pte" else []))
    return out


def test_every_family_has_a_test_model_and_back():
    assert [f.name for f in families.FAMILIES] == [c.name for c in CASES]
    for case in CASES:
        fam = families.family_of(case.config())
        assert (fam.name, fam.kind) == (case.name, case.kind)


def _inputs(case: FamilyCase, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def _out(model: torch.nn.Module, case: FamilyCase) -> torch.Tensor:
    with torch.no_grad():
        out = model(**_inputs(case))
    return out.logits


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> None:
    mask = _inputs_mask_rows(a)
    torch.testing.assert_close(a[mask], b[mask], atol=atol, rtol=0)


def _inputs_mask_rows(logits: torch.Tensor) -> torch.Tensor:
    """Positions that are real tokens (a decoder's logits per token; padded tail of row 1 left out)."""
    if logits.dim() == 2:
        return torch.ones(logits.shape[0], dtype=torch.bool)
    keep = torch.ones(logits.shape[:2], dtype=torch.bool)
    keep[1, 9:] = False
    return keep


def _subnets(arch) -> list[SubnetConfig]:
    g = arch.group_size
    return [SubnetConfig.uniform(arch, depth=2),
            SubnetConfig.uniform(arch, heads=arch.num_heads - g),
            SubnetConfig.uniform(arch, depth=2, heads=g, mlp=arch.intermediate // 2)]


# --- works ------------------------------------------------------------------------------------------

def _reorder(case: FamilyCase, tmp_path) -> None:
    from mlfs_edge.supernet import reorder_by_importance

    for method in ("weight", "activation"):
        model = build(case)
        before = _out(model, case)
        order = reorder_by_importance(model, method, [_inputs(case, seed=2)])
        assert not order.is_identity()
        _close(_out(model, case), before, atol=1e-5)


def _supernet(case: FamilyCase, tmp_path) -> None:
    """set_active(cfg) computes what the extracted, saved and reloaded standalone model computes."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from mlfs_edge.supernet import ElasticSupernet, extract, reorder_by_importance

    model = build(case)
    reorder_by_importance(model)
    net = ElasticSupernet(model)
    auto = AutoModelForCausalLM if case.kind == "decoder" else AutoModelForSequenceClassification
    for i, cfg in enumerate(_subnets(net.arch)):
        net.set_active(cfg)
        active = _out(model, case)
        extract(model, cfg).save_pretrained(tmp_path / str(i))
        small = auto.from_pretrained(tmp_path / str(i), attn_implementation="eager").eval()
        _close(_out(small, case), active)
    net.set_active(net.full)


def _lora(case: FamilyCase, tmp_path) -> None:
    """Sliceable LoRA + a few MLFS sandwich steps: the loss falls, the base stays frozen, and the
    trained supernet still extracts a sub-network equal to its elastic self."""
    from mlfs_edge.supernet import extract, reorder_by_importance
    from mlfs_edge.supernet.lora import LoraSettings, add_lora
    from mlfs_edge.train.mlfs_config import LossSettings
    from mlfs_edge.train.objective import SandwichObjective, lm_labels
    from mlfs_edge.train.sampling import sandwich

    model = build(case)
    reorder_by_importance(model)
    model = add_lora(model, LoraSettings(rank=4))
    objective = SandwichObjective(model, LossSettings(), seed=0, causal_lm=case.kind == "decoder")
    space = SearchSpace.default(objective.net.arch)
    batch = _inputs(case)
    batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    labels = lm_labels(batch["input_ids"]) if case.kind == "decoder" else torch.tensor([0, 1])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    rng = random.Random(0)
    model.train()
    losses = []
    for _ in range(4):
        subnets = sandwich(space, rng, vary_depth=True, k=1)
        loss, parts = objective(batch, labels, subnets, [1.0] * len(subnets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(parts[0]))  # the largest sub-network's loss: the same network every step
    model.eval()
    assert losses[-1] < losses[0]
    cfg = SubnetConfig.uniform(objective.net.arch, depth=2, heads=objective.net.arch.group_size)
    objective.net.set_active(cfg)
    active = _out(model, case)
    _close(_out(extract(model, cfg), case), active)


def _extract(case: FamilyCase, tmp_path) -> None:
    from mlfs_edge.supernet import extract
    from mlfs_edge.supernet.arch import arch_of

    model = build(case)
    arch = arch_of(model)
    small = extract(model, SubnetConfig.uniform(arch, heads=arch.group_size, mlp=arch.intermediate // 4))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="non-uniform"):
        extract(model, SubnetConfig((0, 1), (arch.num_heads, arch.group_size), (arch.intermediate,) * 2))


def _prune(case: FamilyCase, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from mlfs_edge.prune.mlp import prune_mlp
    from mlfs_edge.supernet.arch import arch_of

    model = build(case)
    pruned = prune_mlp(model, 0.5)
    assert arch_of(pruned).intermediate == arch_of(model).intermediate // 2
    pruned.save_pretrained(tmp_path)
    auto = AutoModelForCausalLM if case.kind == "decoder" else AutoModelForSequenceClassification
    back = auto.from_pretrained(tmp_path, attn_implementation="eager").eval()
    _close(_out(back, case), _out(pruned, case), atol=1e-5)


def _quantize(case: FamilyCase, tmp_path) -> None:
    from transformers.pytorch_utils import Conv1D

    from mlfs_edge.quant import Fp16Config, Int8Config, quantize

    model = build(case)
    ref = _out(model, case)
    scale = ref.abs().max()
    q8_model = quantize(build(case), Int8Config())
    assert not any(type(m) in (torch.nn.Linear, Conv1D) for m in q8_model.modules())  # every projection int8
    q8 = _out(q8_model, case)
    assert (q8 - ref).abs().max() < 0.05 * scale
    half = quantize(build(case), Fp16Config())
    assert next(half.parameters()).dtype == torch.float16


def _pte(case: FamilyCase, tmp_path) -> None:
    from mlfs_edge.export import xnnpack_runner

    model = build(case)
    batch = _inputs(case)
    got = xnnpack_runner(model, batch["input_ids"][1:], batch["attention_mask"][1:])()  # the padded row
    torch.testing.assert_close(got, _out(model, case)[1:], atol=1e-4, rtol=0)


def _engine(case: FamilyCase, tmp_path) -> None:
    """pack + the C++ engine on a sub-network: the same outputs as the elastic PyTorch model."""
    from mlfs_edge.runtime import Engine, pack
    from mlfs_edge.supernet import ElasticSupernet

    model = build(case)
    engine = Engine.load(pack(model, tmp_path / "m.mlfs", dtype="fp32"))
    net = ElasticSupernet(model)
    cfg = _subnets(net.arch)[2]
    batch = _inputs(case)
    with net.activated(cfg):
        want = _out(model, case)
    if case.kind == "decoder":
        got = engine.logits(batch["input_ids"][0].numpy(), subnet=cfg)
        np.testing.assert_allclose(got, want[0].numpy(), atol=1e-4)
    else:
        got = engine.run(batch["input_ids"].numpy(), batch["attention_mask"].numpy(), subnet=cfg)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


RUN: dict[str, Callable] = {"reorder": _reorder, "supernet": _supernet, "lora": _lora, "extract": _extract,
                            "prune": _prune, "quantize": _quantize, "pte": _pte, "engine": _engine}


@pytest.mark.parametrize(("case", "stage"), _cells(works=True))
def test_stage_works(case: FamilyCase, stage: str, tmp_path) -> None:
    RUN[stage](case, tmp_path)


# --- refused ----------------------------------------------------------------------------------------

def _first_call(stage: str, model: torch.nn.Module, tmp_path) -> None:
    """The call a user makes first for `stage`."""
    if stage == "reorder":
        from mlfs_edge.supernet import reorder_by_importance
        reorder_by_importance(model)
    elif stage == "supernet":
        from mlfs_edge.supernet import ElasticSupernet
        ElasticSupernet(model)
    elif stage == "lora":
        from mlfs_edge.supernet.lora import add_lora
        add_lora(model)
    elif stage == "extract":
        from mlfs_edge.supernet import extract
        from mlfs_edge.supernet.arch import arch_of
        extract(model, SubnetConfig.full(arch_of(model)))
    elif stage == "prune":
        from mlfs_edge.prune.mlp import prune_mlp
        prune_mlp(model, 0.5)
    elif stage == "quantize":
        from mlfs_edge.quant import Int8Config, quantize
        quantize(model, Int8Config())
    elif stage == "pte":
        from mlfs_edge.export.lower import ExportConfig, lower_to_executorch
        lower_to_executorch(model, None, ExportConfig(dtype="fp32", max_length=32))
    elif stage == "engine":
        from mlfs_edge.runtime import pack
        pack(model, tmp_path / "m.mlfs", dtype="fp32")


@pytest.mark.parametrize(("case", "stage"), _cells(works=False))
def test_stage_is_refused_in_one_line(case: FamilyCase, stage: str, tmp_path) -> None:
    fam = families.by_name(case.name)
    with pytest.raises(ValueError) as err:
        _first_call(stage, build(case), tmp_path)
    assert "\n" not in str(err.value) and fam.support(stage) in str(err.value)


def test_readme_table_is_the_generated_one():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert families.markdown_table() in readme, "stale README table: mlfs-edge info --families --markdown"


def test_unknown_model_type_is_one_line():
    from transformers import ElectraConfig, T5Config

    with pytest.raises(ValueError, match="unsupported model type 't5': the supported families are BERT"):
        families.check_stage(T5Config(), "supernet")
    assert families.family_of(ElectraConfig()).name == "BERT"


def test_info_families_prints_the_table(capsys):
    from mlfs_edge.cli import main

    assert main(["info", "--families"]) == 0
    out = capsys.readouterr().out
    assert out == families.text_table()
    assert all(f.name in out for f in families.FAMILIES) and "ExecuTorch .pte export is for encoders" in out
    assert main(["info", "--families", "--markdown"]) == 0
    assert capsys.readouterr().out == families.markdown_table()
