"""`facepcl embed`'s flags: one group per owner (export, FaceEmbedder, FaceDetector), each flag its owner's option."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from facepcl import FaceEmbedder
from facepcl.cli import build_parser, main
from facepcl.detection import FaceDetector
from facepcl.export import EmbedOptions


def _embed_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["embed"]


def _dests(owner: str) -> set[str]:
    return {a.dest.removeprefix(f"{owner}.") for a in _embed_parser()._actions if a.dest.startswith(f"{owner}.")}


def test_every_detector_option_has_a_flag():
    # device and mode are the embedder's, which the detector inherits; every other FaceDetector option needs a flag
    assert _dests("detector") == set(FaceDetector.options()) - {"device", "mode"}


def test_every_flag_is_an_option_of_its_owner():
    assert _dests("embedder") <= set(FaceEmbedder.options())
    assert _dests("export") <= {f.name for f in dataclasses.fields(EmbedOptions)} - {"embedder"}
    assert _dests("embedder")
    assert _dests("export")


@pytest.fixture()
def captured(monkeypatch):
    """The EmbedOptions a command line builds (nothing runs)."""
    got: list[EmbedOptions] = []

    def fake(opts: EmbedOptions) -> int:
        got.append(opts)
        return 0

    monkeypatch.setattr("facepcl.export.run_embed", fake)
    return got


def test_command_line_builds_the_owners_options(captured):
    assert main(["embed", "photos", "-o", "out", "--mode", "exact", "--dtype", "bf16", "--detector-dtype", "bf16",
                 "--det-threshold", "0.6", "--max-faces", "1", "--min-face-size", "20", "--batch-size", "4",
                 "--detector-batch-size", "2", "--rescue-threshold", "0", "--every", "3", "--no-download"]) == 0
    opts = captured[0]
    assert opts.embedder == {"mode": "exact", "dtype": "bf16", "batch_size": 4,
                             "detector": {"dtype": "bf16", "det_threshold": 0.6, "max_faces": 1, "min_face_size": 20.0,
                                          "batch_size": 2, "rescue_threshold": None, "download": False}}
    assert (opts.inputs, opts.out, opts.every, opts.model) == (["photos"], "out", 3, None)
    # flags left out are not passed on: the owners' defaults apply
    assert main(["embed", "photos", "-o", "out", "--no-detect"]) == 0
    assert captured[1].embedder == {"detect": False}
    assert captured[1] == EmbedOptions(inputs=["photos"], out="out", embedder={"detect": False})


@pytest.mark.parametrize("flags", [["--exact"], ["--fast"], ["--mode", "quick"], ["--conf-threshold", "0.5"]])
def test_removed_and_bad_flags_are_usage_errors(flags, captured, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["embed", "photos", "-o", "out", *flags])
    err = capsys.readouterr().err
    assert usage.value.code == 2
    assert not captured
    assert ("unrecognized arguments: " + flags[0]) in err or "invalid choice: 'quick'" in err


def test_unknown_detector_option_fails_before_the_model_loads(tmp_path):
    from facepcl.export import run_embed

    (tmp_path / "a.jpg").write_bytes(b"x")
    opts = EmbedOptions(inputs=[str(tmp_path / "a.jpg")], out=str(tmp_path / "out"),
                        embedder={"detector": {"conf_threshold": 0.5}})
    with pytest.raises(TypeError, match=r"unknown detector options \['conf_threshold'\]"):
        run_embed(opts)
    assert not (tmp_path / "out").exists()
