"""mlfs_edge.stats: mean ± sd over seeds and the paired bootstrap interval, against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlfs_edge.report import mean_sd_cell
from mlfs_edge.stats import decode_correct, encode_correct, mean_sd, paired_bootstrap


def test_mean_sd_is_the_sample_sd():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([0.8]) == (0.8, None)  # one seed: no spread to report
    with pytest.raises(ValueError):
        mean_sd([])
    assert mean_sd_cell(0.84375, 0.0041) == "84.38 ± 0.41" and mean_sd_cell(0.8, None) == "80.00"


def test_correctness_strings_round_trip():
    text = encode_correct([1, 0, 2, 2], [1, 1, 2, 0])
    assert text == "1010"
    assert decode_correct(text).tolist() == [1, 0, 1, 0]
    for bad in ("", "10x1"):
        with pytest.raises(ValueError):
            decode_correct(bad)
    with pytest.raises(ValueError):
        encode_correct([1, 0], [1])


def test_bootstrap_matches_the_normal_interval_of_a_known_case():
    # a is right on 600 of 1,000 items, b on none: the difference is a proportion, whose standard
    # error is sqrt(p(1-p)/n) = 0.01549; the 95 % percentile interval must be close to ±1.96 of it.
    a = [1] * 600 + [0] * 400
    b = [0] * 1000
    ci = paired_bootstrap([a], [b])
    half = 1.96 * math.sqrt(0.6 * 0.4 / 1000)
    assert ci.diff == pytest.approx(0.6)
    assert ci.low == pytest.approx(0.6 - half, abs=0.004) and ci.high == pytest.approx(0.6 + half, abs=0.004)
    assert ci.items == 1000 and ci.resamples == 2000 and ci.covers(0.6) and not ci.covers(0.55)
    assert paired_bootstrap([a], [b]) == ci  # the RNG seed is fixed: same inputs, same interval


def test_bootstrap_is_paired():
    # Both methods are right on the same 500 of 1,000 items, and a also on 20 more: unpaired, the
    # two accuracies (0.52 vs 0.50) would overlap widely; paired, only the 20 items differ, so the
    # interval is narrow and excludes 0.
    base = np.zeros(1000, dtype=int)
    base[:500] = 1
    a = base.copy()
    a[500:520] = 1
    ci = paired_bootstrap([a], [base])
    assert ci.diff == pytest.approx(0.02) and ci.low > 0.005 and ci.high < 0.035
    assert paired_bootstrap([base], [base]).high == 0.0  # identical methods: a zero-width interval at 0


def test_bootstrap_averages_each_side_over_its_seeds():
    # Two seeds of a (right on items 0-1 and 0-2) against one run of b: per-item means 1, 1, .5, 0
    ci = paired_bootstrap(["1100", "1110"], ["0000"], resamples=500)
    assert ci.diff == pytest.approx(0.625)
    assert 0.0 <= ci.low <= ci.diff <= ci.high <= 1.0


def test_bootstrap_refuses_unpaired_input():
    with pytest.raises(ValueError, match="not the same test items"):
        paired_bootstrap(["101"], ["10"])
    with pytest.raises(ValueError, match="different numbers of items"):
        paired_bootstrap(["101", "10"], ["101"])
    with pytest.raises(ValueError, match="no runs"):
        paired_bootstrap([], ["1"])
