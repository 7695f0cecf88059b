"""Every input bounded, every unclear error one clear line: URLs, config sizes, config files, templates, huge images."""

from __future__ import annotations

import os

import pytest

from facepcl.cli import main

URL_CASES = [
    ["embed", "img.jpg", "-o", "s3://bucket/out"],
    ["embed", "s3://bucket/img.jpg", "-o", "out"],
    ["index", "export", "-o", "gs://bucket/index"],
    ["index", "gs://bucket/export", "-o", "index"],
    ["search", "gs://bucket/index", "q.jpg"],
    ["search", "index", "https://example.com/q.jpg"],
    ["prepare", "s3://bucket/videos", "-o", "frames"],
    ["prepare", "videos", "-o", "s3://bucket/frames"],
    ["convert", "s3://bucket/best.pth", "out"],
    ["convert", "best.pth", "gs://bucket/model"],
    ["plot", "export", "-o", "s3://bucket/map.png"],
    ["plot", "s3://bucket/export", "-o", "map.png"],
    ["swap", "a.jpg", "https://example.com/b.jpg", "-o", "grid.png"],
    ["swap", "a.jpg", "b.jpg", "-o", "s3://bucket/grid.png"],
]


@pytest.mark.parametrize("argv", URL_CASES, ids=[" ".join(a) for a in URL_CASES])
def test_cli_refuses_urls_before_touching_anything(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"facepcl {argv[0]}: error: ")
    assert "not supported yet" in err and "copy the data to a local folder" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no local folder named "s3:" or "gs:"


def test_refuse_url_accepts_local_paths():
    from facepcl._utils.paths import refuse_url

    refuse_url(["a/b.jpg", "./s3/x", "C:\\data\\x.jpg", "/abs/path", "weird:name"], "INPUT")
    refuse_url(None, "-o")
    with pytest.raises(ValueError, match=r"-o 's3://b/x'.*s3://"):
        refuse_url("s3://b/x", "-o")
