"""Dynamic Weight Average against its formula."""

from __future__ import annotations

import math

import pytest

from facepcl.train import DynamicWeightAverage


def formula(prev: list[float], prev2: list[float], t: float) -> list[float]:
    w = [a / b for a, b in zip(prev, prev2, strict=True)]
    e = [math.exp(x / t) for x in w]
    return [len(w) * x / sum(e) for x in e]


def test_weights_are_one_before_the_third_epoch() -> None:
    dwa = DynamicWeightAverage(2, 2.0)
    assert dwa.weights(1) == [1.0, 1.0]
    dwa.record(1, [3.0, 2.0])
    assert dwa.weights(2) == [1.0, 1.0]
    dwa.record(2, [1.5, 2.0])
    assert dwa.weights(3) != [1.0, 1.0]


def test_weights_follow_the_formula() -> None:
    dwa = DynamicWeightAverage(2, 2.0)
    history = {1: [6.2, 3.1], 2: [5.0, 3.0], 3: [4.1, 3.3], 4: [4.0, 2.2]}
    for epoch, losses in history.items():
        dwa.record(epoch, losses)
    for epoch in (3, 4, 5):
        got = dwa.weights(epoch)
        want = formula(history[epoch - 1], history[epoch - 2], 2.0)
        assert got == pytest.approx(want, rel=1e-12)
        assert sum(got) == pytest.approx(2.0)
    # hand value: w = (5.0/6.2, 3.0/3.1), lambda_face = 2 e^{w1/2} / (e^{w1/2} + e^{w2/2})
    w1, w2 = 5.0 / 6.2, 3.0 / 3.1
    assert dwa.weights(3)[0] == pytest.approx(2 * math.exp(w1 / 2) / (math.exp(w1 / 2) + math.exp(w2 / 2)))
    # the task whose loss fell less (ratio closer to 1) gets the larger weight
    assert dwa.weights(3)[1] > dwa.weights(3)[0]


def test_temperature_and_missing_history() -> None:
    dwa = DynamicWeightAverage(2, temperature=0.5)
    dwa.record(1, [1.0, 1.0])
    dwa.record(2, [0.5, 1.0])
    assert dwa.weights(3) == pytest.approx(formula([0.5, 1.0], [1.0, 1.0], 0.5))
    # an epoch without both predecessors recorded keeps weight 1 instead of dividing by nothing
    assert dwa.weights(7) == [1.0, 1.0]


def test_state_round_trip_and_validation() -> None:
    dwa = DynamicWeightAverage(2, 2.0, start_epoch=4)
    for e, losses in {1: [2.0, 1.0], 2: [1.0, 1.0], 3: [0.8, 0.9]}.items():
        dwa.record(e, losses)
    assert dwa.weights(3) == [1.0, 1.0]  # start_epoch 4
    other = DynamicWeightAverage()
    other.load_state_dict(dwa.state_dict())
    assert other.weights(4) == dwa.weights(4) != [1.0, 1.0]
    with pytest.raises(ValueError, match="start_epoch"):
        DynamicWeightAverage(start_epoch=2)
    with pytest.raises(ValueError, match="expected 2"):
        dwa.record(5, [1.0])
