"""The backend adapters (mlfs_edge.eval.backends), one per runtime, on a tiny random BERT: each builds
its artefacts and, loaded, gives the same sentence embedding as PyTorch fp32 eager (int8 within its
quantisation error); ExecuTorch keeps its one-thread-count-per-process rule."""

import numpy as np
import pytest
from transformers import AutoModel, AutoTokenizer

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.eval.backends import ADAPTERS, BACKENDS, Subject, load

SENTENCE = "a warm, funny and quietly moving film"


@pytest.fixture(scope="module")
def built(tiny_bert_dir, tmp_path_factory):
    model = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    arch = ArchSpec.from_hf_config(model.config)
    subject = Subject(model, tokenizer, SubnetConfig.uniform(arch, depth=2, heads=2, mlp=32), output="embedding",
                      max_length=32)
    out = tmp_path_factory.mktemp("backends")
    # ExecuTorch at fp32 only: each lowering takes tens of seconds, and test_compare exports its int8
    artefacts = {name: ADAPTERS[name].build(subject, ("fp32",) if name == "executorch" else ADAPTERS[name].DTYPES,
                                            out) for name in BACKENDS}
    ids = np.asarray([tokenizer(SENTENCE)["input_ids"]], dtype=np.int64)
    return subject, artefacts, ids


def test_every_adapter_has_the_same_face():
    assert set(BACKENDS) == {"pytorch", "onnxruntime", "executorch", "mlfs"}
    for name, adapter in ADAPTERS.items():
        assert name == adapter.NAME and set(adapter.DTYPES) <= {"fp32", "fp16", "int8"}
        assert isinstance(adapter.BUILD_IN_WORKER, bool) and isinstance(adapter.DTYPES_APART, bool)
        assert callable(adapter.build) and callable(adapter.load)


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime", "executorch", "mlfs"])
def test_each_runtime_gives_the_sub_networks_embedding(built, backend):
    _, artefacts, ids = built
    mask = np.ones_like(ids)
    reference = load("pytorch", artefacts["pytorch"]["fp32"], "fp32").predict(ids, mask)
    assert reference.shape == (1, 32) and np.isfinite(reference).all()
    for dtype, artefact in artefacts[backend].items():
        runner = load(backend, artefact, dtype)
        got = runner.predict(ids, mask)
        assert got.shape == reference.shape and got.dtype == np.float32
        tolerance = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.15}[dtype] * float(np.abs(reference).max())
        assert np.abs(got - reference).max() <= tolerance, (backend, dtype)
        assert runner.size_bytes > 0


def test_pytorch_int8_is_pytorchs_own_dynamic_quantisation(built):
    import torch

    _, artefacts, _ = built
    fp32 = load("pytorch", artefacts["pytorch"]["fp32"], "fp32")
    int8 = load("pytorch", artefacts["pytorch"]["int8"], "int8")
    assert int8.size_bytes < 0.35 * fp32.size_bytes  # linears and embedding tables in 8 bits
    assert torch.backends.quantized.engine in ("x86", "fbgemm", "qnnpack", "onednn")


def test_an_unknown_backend_or_dtype_is_a_clear_error(built):
    _, artefacts, _ = built
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        load("tflite", {}, "fp32")
    with pytest.raises(ValueError, match="not 'int4'"):
        load("pytorch", artefacts["pytorch"]["fp32"], "int4")


def test_executorch_keeps_one_thread_count_per_process(built):
    """ExecuTorch 1.5 cannot resize its threadpool once a program is loaded: the adapter refuses."""
    _, artefacts, _ = built
    first = load("executorch", artefacts["executorch"]["fp32"], "fp32")  # the pool is sized here, or already was
    from mlfs_edge.eval.backends import executorch

    other = executorch._pool_threads + 1
    with pytest.raises(ValueError, match="another process"):
        load("executorch", artefacts["executorch"]["fp32"], "fp32", threads=other)
    with pytest.raises(ValueError, match="another process"):
        first.set_threads(other)
