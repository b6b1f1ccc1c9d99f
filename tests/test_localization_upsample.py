"""CAS upsampling: bit-identical to the formula it replaced, equal to numpy's and scipy's interpolators, exact values.

``upsample_linear`` evaluates scipy's piecewise-linear ``PPoly``. Before, it wrote the same interpolation by hand
(``_hand_written`` below, kept here as the reference): the switch must not move one bit of any proposal score.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy.interpolate import interp1d

from ftcl_plugin.localization import upsample_linear

FACTORS = (1, 2, 3, 7, 20, 24)  # 20: ACM-Net's factor, 24: CoLA's


def _hand_written(values: np.ndarray, factor: int) -> np.ndarray:
    """``upsample_linear`` as written before it called scipy, verbatim: the bit-level reference."""
    values = np.asarray(values, dtype=np.float64)
    length = values.shape[0]
    if length == 1 or factor == 1:
        return np.repeat(values, factor, axis=0)
    position = np.arange(length * factor) / factor
    left = np.minimum(np.floor(position).astype(np.int64), length - 2)
    fraction = (position - left).reshape((-1,) + (1,) * (values.ndim - 1))
    return values[left] + fraction * (values[left + 1] - values[left])


def _random_cases(count: int, seed: int):
    """CAS-like arrays (sigmoid outputs), wide-range floats and small integers, 1-D and 2-D, T from 1 to 150."""
    rng = np.random.default_rng(seed)
    for case in range(count):
        length = int(rng.integers(1, 150)) if case >= 6 else (1, 2)[case % 2]
        shape = (length,) if case % 4 == 0 else (length, int(rng.integers(1, 6)))
        kind = case % 3
        if kind == 0:
            values = 1.0 / (1.0 + np.exp(-3.0 * rng.normal(size=shape)))
        elif kind == 1:
            values = rng.normal(size=shape) * 10.0 ** float(rng.integers(-8, 8))
        else:
            values = rng.integers(-3, 3, size=shape).astype(np.float64)
        yield values, FACTORS[case % len(FACTORS)]


def test_bit_identical_to_the_hand_written_formula():
    # Byte comparison: equal bits, so even the sign of a zero is kept.
    for values, factor in _random_cases(900, seed=0):
        expected = _hand_written(values, factor)
        got = upsample_linear(values, factor)
        assert got.shape == expected.shape == (values.shape[0] * factor,) + values.shape[1:]
        assert got.dtype == np.float64 and got.tobytes() == expected.tobytes(), (values.shape, factor)


def test_edge_cases_by_hand():
    # One snippet: a constant; factor 1: the input itself, bit for bit (also its last snippet).
    assert upsample_linear(np.array([0.3]), 4).tolist() == [0.3] * 4
    assert upsample_linear(np.array([[0.3, 0.7]]), 20).tolist() == [[0.3, 0.7]] * 20
    values = np.array([0.1, 0.7, 0.3])
    assert upsample_linear(values, 1).tolist() == [0.1, 0.7, 0.3]
    # Two snippets 1 and 3 (slope 2), u = 4: positions 0, 0.25, ..., 1.75; the last three extrapolate past 1.
    # Every number is a dyadic fraction, so the float results are exact.
    assert upsample_linear(np.array([1.0, 3.0]), 4).tolist() == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    # u = 20 and 24 on 0 -> 1: the value at position j / u is j / u itself (0 + (j / u - 0) * 1).
    for factor in (20, 24):
        assert upsample_linear(np.array([0.0, 1.0]), factor).tolist() == (np.arange(2 * factor) / factor).tolist()
    # A falling edge extrapolates below 0: [1, 0.5] at u = 2 -> 1, 0.75, 0.5, 0.25.
    assert upsample_linear(np.array([[1.0], [0.5]]), 2)[:, 0].tolist() == [1.0, 0.75, 0.5, 0.25]


def test_equal_to_numpy_interp_inside_and_to_exact_rationals_past_the_end():
    # numpy's interp (its own C code) computes slope * (x - x_k) + y_k like the function, and returns y_k on a
    # snippet: equal bits on [0, T - 1). Past the last snippet numpy holds the end value, so there the reference
    # is the line through the last two snippets in exact rational arithmetic, at the float64 position j / u (the
    # positions are rounded before anything else happens; the rest is a subtraction, a product and a sum).
    for values, factor in _random_cases(300, seed=1):
        length = values.shape[0]
        if length == 1 or factor == 1:
            continue
        columns = values.reshape(length, -1)
        got = upsample_linear(values, factor).reshape(length * factor, -1)
        inside = np.arange(factor * (length - 1))
        for column in range(columns.shape[1]):
            expected = np.interp(inside / factor, np.arange(length), columns[:, column])
            assert got[inside, column].tobytes() == expected.tobytes()
            last, before = Fraction(columns[-1, column]), Fraction(columns[-2, column])
            for j in range(factor * (length - 1), factor * length):
                exact = before + (Fraction(j / factor) - (length - 2)) * (last - before)
                scale = 3 * max(abs(float(last)), abs(float(before)), 1e-300)  # |line| <= 3 max(|y|) on [T-1, T)
                assert abs(got[j, column] - float(exact)) <= 4 * np.spacing(scale)


def test_scipy_interp1d_as_the_baselines_call_it():
    # ACM-Net (utils/net_evaluation.py, upgrade_resolution) and CoLA (core/utils.py, upgrade_resolution) call
    # interp1d(arange(T), cas, kind="linear", axis=0, fill_value="extrapolate") at arange(0, T, 1 / u). At our
    # positions j / u interp1d differs only on a snippet k in 1..T-2, where it takes the piece ending there and
    # returns y[k-1] + (y[k] - y[k-1]) instead of y[k]: one ulp at most.
    rng = np.random.default_rng(2)
    for length in (2, 3, 7, 40, 750):
        values = rng.random((length, 3))
        for factor in (1, 20, 24):
            got = upsample_linear(values, factor)
            same_positions = interp1d(np.arange(length), values, kind="linear", axis=0,
                                      fill_value="extrapolate")(np.arange(length * factor) / factor)
            knots = np.zeros(length * factor, dtype=bool)
            knots[factor:factor * (length - 1):factor] = factor > 1
            assert np.array_equal(got[~knots], same_positions[~knots])
            assert np.all(np.abs(got[knots] - same_positions[knots]) <= np.spacing(np.abs(got[knots])))
            upstream = interp1d(np.arange(length), values, kind="linear", axis=0,
                                fill_value="extrapolate")(np.arange(0, length, 1 / factor))
            np.testing.assert_allclose(got, upstream, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", (20, 24))
def test_knots_are_the_snippet_values(factor):
    values = np.random.default_rng(3).random((30, 4))
    up = upsample_linear(values, factor)
    # snippets 0 .. T-2 exactly; the last snippet is reached along the last piece (y[T-2] + 1 * (y[T-1] - y[T-2]))
    assert np.array_equal(up[: factor * 29 : factor], values[:29])
    np.testing.assert_allclose(up[factor * 29], values[29], rtol=0, atol=2 * np.spacing(1.0))
