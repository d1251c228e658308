"""Every native kernel on every ISA this CPU runs, against numpy / torch and the shared int8 scheme.

The C++ tests (csrc/tests/test_kernels.cpp) compare each ISA with the scalar reference; these check
that reference semantics match what PyTorch computes, through the same bindings the engine's pack
writer uses (pack_weight), on sliced weights (a sub-network's prefix, never a copy).
"""

import zlib

import numpy as np
import pytest
import torch

from mlfs_edge import _core
from mlfs_edge.quant.scheme import int8_linear_reference, quantize_per_row

ISAS = _core.supported_isas()
# (M, N_full, K_full, n, k): full weight [N_full, K_full], the slice uses its first n rows / k columns.
SHAPES = [(1, 17, 5, 17, 5), (3, 40, 33, 31, 19), (7, 130, 96, 129, 67), (1, 384, 384, 200, 384),
          (16, 96, 64, 96, 64)]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))  # stable across processes


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("m", "n_full", "k_full", "n", "k"), SHAPES)
def test_gemm_f32_and_f16_match_torch_on_prefix_slices(isa, m, n_full, k_full, n, k):
    rng = _rng(m, n_full, k_full, n, k)
    w = rng.standard_normal((n_full, k_full)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n_full).astype(np.float32)
    want = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w[:n, :k]),
                                      torch.from_numpy(bias[:n])).numpy()
    got = _core.gemm(x, _core.pack_weight(w), n=n, bias=bias, isa=isa)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.sqrt(k))
    scaled = _core.gemm(x, _core.pack_weight(w), n=n, alpha=0.25, isa=isa)
    np.testing.assert_allclose(scaled, 0.25 * (want - bias[:n]), rtol=1e-5, atol=1e-4 * np.sqrt(k))

    w16 = w.astype(np.float16)
    want16 = x.astype(np.float64) @ w16[:n, :k].astype(np.float64).T + bias[:n]
    got16 = _core.gemm(x, _core.pack_weight(w16), n=n, bias=bias, isa=isa)
    np.testing.assert_allclose(got16, want16, rtol=1e-5, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_rows_is_the_shared_scheme_bit_for_bit(isa):
    x = _rng("q").standard_normal((9, 45)).astype(np.float32) * 3
    x[2] = 0  # zero row: scale 1
    x[3, :4] = [0.5, 1.5, 2.5, -2.5]  # exact ties after scaling by max 127 -> round half to even
    x[3, 4] = 127.0
    q, scale, total = _core.quantize_rows_i8(x, isa=isa)
    q_ref, scale_ref = quantize_per_row(torch.from_numpy(x))
    assert q.shape == (9, 48) and not q[:, 45:].any()  # zero padding to a multiple of 4
    np.testing.assert_array_equal(q[:, :45], q_ref.numpy())
    np.testing.assert_array_equal(scale, scale_ref.numpy())
    np.testing.assert_array_equal(total, q_ref.numpy().astype(np.int64).sum(axis=1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("m", "n_full", "k_full", "n", "k"), SHAPES)
def test_gemm_i8_matches_the_int8_reference_and_torch_int_mm(isa, m, n_full, k_full, n, k):
    rng = _rng("i8", m, n_full, k_full, n, k)
    w = torch.from_numpy(rng.standard_normal((n_full, k_full)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32))
    bias = torch.from_numpy(rng.standard_normal(n_full).astype(np.float32))
    q_w, w_scale = quantize_per_row(w)  # whole-supernet quantisation; the slice reuses its rows' scales
    want = int8_linear_reference(x, q_w[:n, :k], w_scale[:n], bias[:n]).numpy()
    got = _core.gemm_i8(x.numpy(), _core.pack_weight(q_w.numpy()), w_scale.numpy(), n=n, bias=bias.numpy(), isa=isa)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    # Exact integer products: with unit scales the output is the int32 accumulator itself.
    q_x, _ = quantize_per_row(x)
    exact = (q_x.to(torch.int64) @ q_w[:n, :k].to(torch.int64).T).numpy()
    unit = _core.gemm_i8(q_x.float().numpy(), _core.pack_weight(q_w.numpy()), np.ones(n_full, np.float32), n=n,
                         isa=isa)
    # q_x as float re-quantises to itself only if its row max is 127, which quantize_per_row guarantees.
    np.testing.assert_array_equal(unit, exact.astype(np.float32))


@pytest.mark.parametrize("isa", ISAS)
def test_row_kernels_match_torch(isa):
    rng = _rng("rows")
    y = rng.standard_normal((5, 77)).astype(np.float32) * 3
    bias = rng.standard_normal(77).astype(np.float32)
    want = torch.nn.functional.gelu(torch.from_numpy(y + bias)).numpy()
    np.testing.assert_allclose(_core.bias_gelu(y, bias, isa=isa), want, rtol=1e-5, atol=1e-6)

    res = rng.standard_normal((5, 77)).astype(np.float32)
    gamma, beta = rng.standard_normal(77).astype(np.float32), rng.standard_normal(77).astype(np.float32)
    ln = torch.nn.functional.layer_norm(torch.from_numpy(y + 10 + res), (77,), torch.from_numpy(gamma),
                                        torch.from_numpy(beta), eps=1e-12).numpy()
    np.testing.assert_allclose(_core.layernorm(y + 10, gamma, beta, 1e-12, residual=res, isa=isa), ln,
                               rtol=1e-4, atol=1e-4)

    scores = rng.standard_normal((4, 19)).astype(np.float32) * 5
    mask = np.zeros(19, np.float32)
    mask[-4:] = np.finfo(np.float32).min  # padded keys, as transformers builds the additive mask
    sm = torch.softmax(torch.from_numpy(scores) * 0.125 + torch.from_numpy(mask), dim=-1).numpy()
    got = _core.softmax(scores, mask, scale=0.125, isa=isa)
    np.testing.assert_allclose(got, sm, rtol=1e-5, atol=1e-7)
    assert not got[:, -4:].any()


@pytest.mark.parametrize("isa", ISAS)
def test_fp16_conversion_matches_numpy(isa):
    halves = np.arange(65536, dtype=np.uint16).view(np.float16)
    back = _core.f16_to_f32(halves, isa=isa)
    finite = np.isfinite(halves)
    np.testing.assert_array_equal(back[finite], halves[finite].astype(np.float32))
    assert np.isnan(back[np.isnan(halves)]).all()
    x = np.concatenate([_rng("f16").standard_normal(1000).astype(np.float32) * 1000,
                        np.float32([65519, 65520, 1e-8, -3e-8, 2.0**-25, np.inf, -np.inf])])
    with np.errstate(over="ignore"):  # 65520 and 1e3-scaled outliers overflow to inf on purpose
        want = x.astype(np.float16)
    np.testing.assert_array_equal(_core.f32_to_f16(x, isa=isa).view(np.uint16), want.view(np.uint16))


def test_kernels_reject_bad_input_with_python_errors():
    x = np.ones((2, 8), np.float32)
    wt = _core.pack_weight(np.ones((4, 8), np.float32))
    with pytest.raises(TypeError, match="float32"):
        _core.gemm(x.astype(np.float64), wt)
    with pytest.raises(ValueError, match="input channels"):
        _core.gemm(np.ones((2, 9), np.float32), wt)
    with pytest.raises(ValueError, match="exceeds"):
        _core.gemm(x, wt, n=5)
    with pytest.raises(ValueError, match="at least"):
        _core.gemm(x, wt, bias=np.ones(2, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.gemm(np.ones((2, 16), np.float32)[:, ::2], wt)
    with pytest.raises(ValueError, match="2-D"):
        _core.gemm(np.ones(8, np.float32), wt)
    with pytest.raises(TypeError, match="int8"):
        _core.gemm_i8(x, wt, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="w_scale"):
        _core.gemm_i8(x, _core.pack_weight(np.ones((4, 8), np.int8)), None)
    with pytest.raises(TypeError, match="float32, float16 or int8"):
        _core.pack_weight(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="eps"):
        _core.layernorm(x, np.ones(8, np.float32), np.zeros(8, np.float32), 0.0)
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.softmax(x, isa="sse9")
    unsupported = [i for i in ("avx2", "avx512", "neon", "dotprod", "i8mm") if i not in ISAS]
    if unsupported:
        with pytest.raises(ValueError, match="cannot run"):
            _core.softmax(x, isa=unsupported[0])


def test_pack_weight_layouts_keep_prefix_slices_as_strides():
    w = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    np.testing.assert_array_equal(_core.pack_weight(w), w.T)
    q = np.arange(35 * 6, dtype=np.int64).reshape(35, 6).astype(np.int8)
    packed = _core.pack_weight(q)  # "P32K4": [ceil(35/32), 32 * round_up(6, 4)], panels of 32 outputs
    assert packed.shape == (2, 256)
    groups = packed.reshape(2, 2, 32, 4)  # [panel, group of 4 inputs, output in panel, input in group]
    np.testing.assert_array_equal(groups[0, 0], q[:32, 0:4])
    np.testing.assert_array_equal(groups[0, 1, :, :2], q[:32, 4:6])
    np.testing.assert_array_equal(groups[1, 0, :3], q[32:, 0:4])
    assert not groups[:, 1, :, 2:].any() and not groups[1, :, 3:].any()  # zero padding
    with pytest.raises(ValueError, match="not a packed int8 weight for 20 outputs"):
        _core.gemm_i8(np.ones((1, 6), np.float32), packed, np.ones(20, np.float32))
    with pytest.raises(ValueError, match="not a packed int8 weight for 70 outputs"):
        _core.gemm_i8(np.ones((1, 6), np.float32), packed, np.ones(70, np.float32))
