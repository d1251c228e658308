import torch

from mlfs_edge.quant.scheme import QMAX, dequantize_per_row, int8_linear_reference, quantize_per_row


def test_per_row_quantisation_bounds_the_error_by_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(64, 96)
    w[3] = 0.0
    q, s = quantize_per_row(w)
    assert q.dtype == torch.int8 and q.abs().max() <= QMAX
    assert torch.all(dequantize_per_row(q, s)[3] == 0)
    err = (dequantize_per_row(q, s) - w).abs()
    assert torch.all(err <= s[:, None] / 2 + 1e-7)


def test_prefix_slice_of_a_quantised_matrix_is_the_slice_of_the_quantised_matrix():
    torch.manual_seed(1)
    w = torch.randn(32, 48)
    q, s = quantize_per_row(w)
    x = torch.randn(5, 20)
    full = int8_linear_reference(x, q[:16, :20], s[:16])
    assert full.shape == (5, 16)
    ref = x @ w[:16, :20].T
    assert torch.nn.functional.cosine_similarity(full.flatten(), ref.flatten(), dim=0) > 0.999
