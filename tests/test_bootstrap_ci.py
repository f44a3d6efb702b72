"""The paired bootstrap intervals of the benchmarks: ``bootstrap`` in benchmarks/ranker_games.py and
``bootstrap_diff`` in benchmarks/ranker.py, both of mean(a - b) over paired items, on data whose answer is known:
a known shift, a known null, and a normal sample whose interval should be the textbook mean +- 1.96 sd / sqrt(n)."""

from __future__ import annotations

import numpy as np
import pytest

ROUNDS = 2000  # bootstrap resamples (the functions' default)


@pytest.fixture(scope="module", params=["ranker_games.bootstrap", "ranker.bootstrap_diff"])
def ci(request, load_benchmark):
    """(a, b, seed) -> (point estimate of mean(a - b), low, high) from the function under test."""
    module, name = request.param.split(".")
    fn = getattr(load_benchmark(module), name)

    def run(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
        out = fn(a, b, n=ROUNDS, seed=seed)
        lo, hi = out["ci95"] if "ci95" in out else out["diff_ci95"]
        assert lo <= hi
        return out["diff"], lo, hi

    run.name = request.param
    return run


def paired(n: int, seed: int, spread: float = 1.0) -> np.ndarray:
    """Per-item baselines that vary a lot between items (as per-user NDCG does): pairing must cancel them."""
    return np.random.default_rng(seed).normal(0.4, spread, n)


# ------------------------------------------------------------------ (1) a known shift
def test_constant_shift_gives_exactly_that_difference(ci):
    a = paired(300, seed=1)
    b = a + 0.05  # the second is the first plus a constant: mean(a - b) is -0.05 for every resample
    point, lo, hi = ci(a, b)
    assert point == pytest.approx(-0.05, abs=1e-12)
    assert lo == pytest.approx(-0.05, abs=1e-12) and hi == pytest.approx(-0.05, abs=1e-12)
    assert hi < 0


def test_known_mean_difference_with_noise_is_inside_and_zero_is_not(ci):
    n, true = 200, 0.05
    a = paired(n, seed=2)  # sd 1 between items: unpaired, the interval would be about +-0.2 wide and hold 0
    b = a - true + np.random.default_rng(3).normal(0.0, 0.05, n)
    point, lo, hi = ci(a, b, seed=4)
    assert point == pytest.approx(np.mean(a - b), abs=1e-12)
    assert point == pytest.approx(true, abs=0.01)
    assert lo < true < hi
    assert lo < point < hi
    assert lo > 0


# ------------------------------------------------------------------ (2) a known null
def test_identical_arrays_give_zero(ci):
    a = paired(300, seed=5)
    point, lo, hi = ci(a, a.copy())
    assert point == 0.0 and lo == 0.0 and hi == 0.0


def test_independent_mean_zero_noise_holds_zero(ci):
    """Both arms are the same baselines plus independent noise of mean 0: the interval holds 0 for this seed and,
    over 40 seeded samples, about 95% of the time (not a fixed or too narrow interval)."""
    n = 150
    held = []
    for seed in range(40):
        base = paired(n, seed=100 + seed)
        noise = np.random.default_rng(200 + seed)
        a, b = base + noise.normal(0.0, 0.1, n), base + noise.normal(0.0, 0.1, n)
        point, lo, hi = ci(a, b, seed=seed)
        assert point == pytest.approx(np.mean(a - b), abs=1e-12)
        assert lo <= point <= hi
        held.append(lo <= 0.0 <= hi)
    assert held[0]
    assert 34 <= sum(held) <= 40, f"{sum(held)}/40 intervals hold 0"


# ------------------------------------------------------------------ (3) width and the textbook interval
def normal_pair(n: int, seed: int, mu: float = 0.03, sd: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a - b is a normal sample (mean mu, sd sd) on top of baselines ten times as spread out."""
    base = paired(n, seed=seed, spread=2.0)
    d = np.random.default_rng(seed + 1).normal(mu, sd, n)
    return base + d, base, d


def test_width_shrinks_as_one_over_sqrt_n(ci):
    widths = {}
    for n in (400, 1600):
        a, b, _ = normal_pair(n, seed=10)
        _, lo, hi = ci(a, b, seed=11)
        widths[n] = hi - lo
    ratio = widths[1600] / widths[400]
    assert 0.35 < ratio < 0.65, f"width ratio {ratio:.3f} for 4x the items (1/sqrt(4) = 0.5)"


@pytest.mark.parametrize("n", [400, 1600])
def test_interval_of_a_normal_mean_is_the_textbook_one(ci, n):
    a, b, d = normal_pair(n, seed=20 + n)
    point, lo, hi = ci(a, b, seed=n)
    m, half = d.mean(), 1.96 * d.std(ddof=1) / np.sqrt(n)
    assert point == pytest.approx(m, abs=1e-12)
    assert (hi - lo) == pytest.approx(2 * half, rel=0.15)
    assert lo == pytest.approx(m - half, abs=0.15 * half)
    assert hi == pytest.approx(m + half, abs=0.15 * half)
