"""The setup-check verdict (log.verdict_window) and the bundled ``check`` recipe."""

from __future__ import annotations

import pytest

from facepcl.train.config import load_config
from facepcl.train.verdict import report, trends


def test_verdict_needs_a_measurable_fall() -> None:
    noisy_flat = [5.0, 6.0, 4.0, 5.5, 4.5, 5.0, 6.0, 4.0, 5.5, 4.5]
    history = {"rec": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
               "face": noisy_flat, "pose": [3.0] * 5 + [2.97] * 5}
    items = {t.name: t for t in trends(history, 3, 0.02)}
    assert items["rec"].falls and items["rec"].change < -0.5
    assert not items["face"].falls  # no trend under the noise
    assert not items["pose"].falls  # steady, but 1 % is below the 2 % asked for
    text = report(list(items.values()), 3)
    assert "FAIL: face, pose did not fall" in text
    with pytest.raises(ValueError, match="verdict_window"):
        trends(history, 6, 0.02)


def test_check_recipe_is_valid_and_asks_for_a_verdict() -> None:
    cfg = load_config("check", ["data.root=x"])
    assert cfg.log.verdict_window >= 5 and cfg.train.max_steps >= 2 * cfg.log.verdict_window
