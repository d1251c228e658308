"""Statistics over seeds and test items: mean ± standard deviation, and a paired bootstrap interval.

Per-item correctness travels in JSON as a string of '0'/'1' (one character per test item, in the
test split's order): a 1,005-item row stays one short line instead of 1,005.

The paired bootstrap compares two methods on the *same* test items. Each side may have several
runs (seeds); an item's score for a side is its correctness averaged over that side's runs, so the
runs are paired item by item and the interval is that of the seed-averaged accuracy difference.
Items are the resampling unit (the test set is the sample); seeds are not resampled — with three
of them a seed bootstrap says little, so their spread is reported separately as the sd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
BOOTSTRAP_SEED = 0  # fixed: the same inputs give the same interval, run after run


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the sd is None for a single value (undefined)."""
    if not values:
        raise ValueError("mean_sd needs at least one value")
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else None)


def encode_correct(predictions: Sequence[int], labels: Sequence[int]) -> str:
    """Per-item correctness as a '0'/'1' string (see the module note)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    return "".join("1" if p == y else "0" for p, y in zip(predictions, labels, strict=True))


def decode_correct(text: str) -> np.ndarray:
    """The 0/1 vector of an `encode_correct` string."""
    if not text or set(text) - {"0", "1"}:
        raise ValueError("per-item correctness must be a non-empty string of 0 and 1")
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")


@dataclass(frozen=True)
class Interval:
    """The observed difference (mean of a − mean of b) and its percentile bootstrap interval."""

    diff: float
    low: float
    high: float
    items: int
    resamples: int
    level: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def paired_bootstrap(a: Sequence[Sequence[float] | str], b: Sequence[Sequence[float] | str],
                     resamples: int = RESAMPLES, level: float = LEVEL, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Percentile interval of mean(a) − mean(b) over test items resampled with replacement.

    `a` and `b` are lists of runs (seeds), each run a per-item score vector (0/1 correctness, or an
    `encode_correct` string) over the same items in the same order.
    """
    da, db = _per_item(a, "a"), _per_item(b, "b")
    if len(da) != len(db):
        raise ValueError(f"paired bootstrap: {len(da)} items on one side, {len(db)} on the other (not the same test "
                         "items)")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError("paired bootstrap: resamples ≥ 1 and 0 < level < 1 are required")
    d = da - db
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory: at most ~2 M drawn indices at a time
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(d.mean()), float(low), float(high), n, resamples, level)


def _per_item(runs: Sequence[Sequence[float] | str], side: str) -> np.ndarray:
    """The per-item score averaged over runs (all runs must cover the same items)."""
    if not runs:
        raise ValueError(f"paired bootstrap: side {side} has no runs")
    vectors = [decode_correct(r) if isinstance(r, str) else np.asarray(r, dtype=np.float64) for r in runs]
    if len({len(v) for v in vectors}) != 1 or len(vectors[0]) == 0:
        raise ValueError(f"paired bootstrap: the runs of side {side} cover different numbers of items")
    out = np.mean(np.stack(vectors).astype(np.float64), axis=0)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"paired bootstrap: side {side} has a non-finite score")
    return out

