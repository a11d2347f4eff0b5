import numpy as np
import torch

from bodycomp_cli.core.preprocess import window_hu, window_unit


def test_window_exact_values():
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.int16)
    assert window_hu(hu).tolist() == [0, 0, 128, 255, 255]
    assert window_hu(hu).dtype == np.uint8


def _exact_window(hu: int) -> int:
    """The contract computed in integers: round-half-even of (HU + 160) * 255 / 400, clipped."""
    quotient, remainder = divmod((hu + 160) * 255, 400)
    if 2 * remainder > 400 or (2 * remainder == 400 and quotient % 2 == 1):
        quotient += 1
    return min(max(quotient, 0), 255)


def test_window_matches_exact_integer_formula_everywhere():
    hu = np.arange(-2000, 3001)
    expected = np.array([_exact_window(int(v)) for v in hu], dtype=np.uint8)
    assert np.array_equal(window_hu(hu.astype(np.int16)), expected)
    # A precomputed 0.6375 factor rounds 40 HU and 200 HU the other way in float64.
    precomputed = np.clip(np.rint((hu + 160) * 0.6375), 0, 255).astype(np.uint8)
    assert hu[precomputed != expected].tolist() == [40, 200]


def test_window_unit_range():
    out = window_unit(np.array([-1000, -160, 40, 240, 3000]))
    assert out.dtype == torch.float32
    assert out.tolist() == [0, 0, 0.5, 1, 1]


def test_window_unit_is_the_correctly_rounded_float32_of_the_exact_value():
    # For integer and quarter HU (HU - low is exact in float32), float32 division is what float64 gives, rounded once.
    hu = np.concatenate([np.arange(-2000, 3001), np.arange(-200, 300, 0.25)]).astype(np.float32)
    expected = np.clip((hu.astype(np.float64) - (30.0 - 350.0 / 2)) / 350.0, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(window_unit(hu, 30.0, 350.0).numpy(), expected)
