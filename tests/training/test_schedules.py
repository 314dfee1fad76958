"""Learning-rate schedules at hand-picked steps."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tf_rcnn.training.schedules import WarmupCosineDecay, WarmupStepDecay, build_schedule


def _lr(schedule, step: int) -> float:
    return float(schedule(step))


def test_step_schedule_warmup_and_boundaries():
    schedule = build_schedule(
        "step", base_lr=0.02, total_steps=100, warmup_steps=10, warmup_factor=0.1, steps=(60, 80)
    )
    # step 0: 0.02 * 0.1 = 0.002
    assert _lr(schedule, 0) == pytest.approx(0.002)
    # warmup midpoint, step 5: factor 0.1 + 0.9 * 5/10 = 0.55 -> 0.011
    assert _lr(schedule, 5) == pytest.approx(0.011)
    # end of warmup and before the first boundary: 0.02
    assert _lr(schedule, 10) == pytest.approx(0.02)
    assert _lr(schedule, 59) == pytest.approx(0.02)
    # at/after boundary 60: 0.02 * 0.1 = 0.002; after 80: 0.0002
    assert _lr(schedule, 60) == pytest.approx(0.002)
    assert _lr(schedule, 79) == pytest.approx(0.002)
    assert _lr(schedule, 80) == pytest.approx(0.0002)
    assert _lr(schedule, 1000) == pytest.approx(0.0002)


def test_cosine_schedule_values():
    schedule = build_schedule(
        "cosine", base_lr=0.1, total_steps=100, warmup_steps=20, warmup_factor=0.5
    )
    # step 10: warmup 0.5 + 0.5 * 10/20 = 0.75; cosine 0.5 * (1 + cos(pi * 0.1))
    expected = 0.1 * 0.75 * 0.5 * (1 + math.cos(math.pi * 0.1))
    assert _lr(schedule, 10) == pytest.approx(expected, rel=1e-5)
    # step 50: warmup done, cosine at half way = 0.5 -> 0.05
    assert _lr(schedule, 50) == pytest.approx(0.05, rel=1e-5)
    assert _lr(schedule, 100) == pytest.approx(0.0, abs=1e-7)
    assert _lr(schedule, 150) == pytest.approx(0.0, abs=1e-7)


def test_constant_schedule_is_warmup_only():
    schedule = build_schedule(
        "constant", base_lr=0.01, total_steps=10, warmup_steps=4, warmup_factor=0.0
    )
    # 0.01 * (0 + 1 * 2/4) = 0.005 at step 2
    np.testing.assert_allclose(
        [_lr(schedule, s) for s in (0, 2, 4, 9)], [0.0, 0.005, 0.01, 0.01], rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize(
    "schedule",
    [
        WarmupStepDecay(0.02, boundaries=(5, 8), gamma=0.5, warmup_steps=2, warmup_factor=0.25),
        WarmupCosineDecay(0.02, total_steps=10, warmup_steps=2, final_factor=0.1),
    ],
)
def test_schedule_serialisation_round_trip(schedule):
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert type(restored) is type(schedule)
    for step in range(12):
        assert _lr(restored, step) == pytest.approx(_lr(schedule, step))


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        build_schedule("poly", 0.1, 10)
    with pytest.raises(ValueError, match="strictly increasing"):
        WarmupStepDecay(0.1, boundaries=(8, 5))
    with pytest.raises(ValueError, match="total_steps"):
        build_schedule("step", 0.1, 10, steps=(5, 20))
    with pytest.raises(ValueError, match="warmup_steps"):
        build_schedule("step", 0.1, 10, warmup_steps=20)
