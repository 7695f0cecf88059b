"""`facepcl demo`: what the page computes for a photo, and the page itself driven in a real headless browser."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import facepcl

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def demo_model():
    from facepcl.demo import DemoModel

    return DemoModel()  # the bundled pcl-demo, with its decoder


@pytest.mark.slow
def test_photo_analysis_counts_faces_and_writes_embeddings(demo_model) -> None:
    from tests import _samples

    a = demo_model.analyze(str(_samples.pyfeat("multi_face.jpg")))
    assert a.count == 5
    assert a.message.startswith("**5 faces found**")
    assert len(a.crops) == 5
    assert a.crops[0][0].shape == (64, 64, 3)
    with np.load(a.embeddings) as z:
        assert z["face"].shape == z["pose"].shape == (5, 2048)
        assert z["bbox"].shape == (5, 4)
        np.testing.assert_array_equal(z["face"], a.result.face)
    grid, msg = demo_model.swap(a, 0, 3)
    assert grid is not None
    assert grid.width > grid.height
    assert "face 0" in msg
    assert demo_model.swap(a, 0, 7)[0] is None
    assert "--index" in demo_model.neighbours(a)[1]


@pytest.mark.slow
def test_unreadable_and_faceless_photos_get_clear_messages(demo_model, tmp_path) -> None:
    from tests import _samples

    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    a = demo_model.analyze(str(bad))
    assert a.count == 0
    assert a.message.startswith("**Cannot read notes.jpg**")
    assert a.annotated is None
    a = demo_model.analyze(str(_samples.pyfeat("free-mountain-vector-01.jpg")))
    assert a.count == 0
    assert a.message.startswith("**No face found**")
    assert demo_model.swap(a, 0, 0) == (None, "Upload a photo with faces first.")


@pytest.mark.slow
def test_demo_with_an_index_shows_each_faces_neighbours(tmp_path) -> None:
    from facepcl.cli import main
    from facepcl.demo import DemoModel
    from tests import _samples

    assert main(["embed", str(_samples.astronaut()), str(_samples.grace_hopper()), "-o", str(tmp_path / "faces"),
                 "-q", "--no-progress"]) == 0
    assert main(["index", str(tmp_path / "faces"), "-o", str(tmp_path / "idx")]) == 0
    m = DemoModel(index=tmp_path / "idx", k=2)
    a = m.analyze(str(_samples.astronaut()))
    picture, msg = m.neighbours(a)
    assert msg == "2 nearest by face code among 2 indexed faces"
    assert picture.width > 2 * 96
    assert picture.height < 2 * 96 + 60  # one row: the one face of the photo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, limit: float = 300) -> None:
    """Poll until the server answers (a bound, not a speed check: model loading on a busy CPU varies)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"facepcl demo exited early:\n{proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"facepcl demo did not answer at {url}")


@pytest.mark.slow
def test_demo_page_in_a_headless_browser_shows_every_face(tmp_path) -> None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER} (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests import _samples

    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "facepcl", "demo", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, proc)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1800"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        driver.get(url)
        wait = WebDriverWait(driver, 300)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#facepcl-photo input[type=file]")))
        upload.send_keys(str(_samples.pyfeat("multi_face.jpg")))
        status = wait.until(ec.text_to_be_present_in_element((By.ID, "facepcl-status"), "found"))
        assert status
        assert "5 faces found" in driver.find_element(By.ID, "facepcl-status").text
        tiles = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#facepcl-crops img") or None)
        assert len({t.get_attribute("src") for t in tiles}) == 5
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#facepcl-annotated img"))
        driver.find_element(By.CSS_SELECTOR, "#facepcl-swap").click()  # faces 0 and 1 are preselected
        wait.until(ec.text_to_be_present_in_element((By.ID, "facepcl-swap-msg"), "in the pose of face 1"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#facepcl-swap-grid img"))
        shot = os.environ.get("FACEPCL_DEMO_SCREENSHOT") or str(tmp_path / "demo.png")
        driver.save_screenshot(shot)
        assert os.path.getsize(shot) > 10_000
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_uploads_are_bounded_named_and_not_kept(demo_model, tmp_path, monkeypatch) -> None:
    from tests import _samples

    photo = tmp_path / "upload-1" / "photo.jpg"
    photo.parent.mkdir()
    photo.write_bytes(_samples.astronaut().read_bytes())
    monkeypatch.setattr(demo_model, "max_upload_bytes", 1000)
    a = demo_model.analyze_upload(str(photo))
    assert a.count == 0
    assert a.message.startswith("**photo.jpg is too large** (")
    assert "up to 1,000 bytes" in a.message
    assert "--max-upload-mb" in a.message
    assert not photo.exists()
    assert not photo.parent.exists()  # the upload and its folder are gone
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    a = demo_model.analyze(str(text))
    assert a.message.startswith("**Cannot read notes.jpg**: not a recognised image format")
    assert str(tmp_path) not in a.message
    assert text.exists()  # analyze() never deletes a file


def test_the_photo_input_hands_non_images_to_the_page(tmp_path) -> None:
    pytest.importorskip("gradio")
    import gradio as gr
    from gradio.data_classes import ImageData

    from facepcl.demo._app import photo_input

    photo = photo_input(gr, label="Photo")
    assert photo.get_block_name() == "image"
    assert not list((Path(facepcl.__file__).parent / "demo").glob("*.pyi"))  # Gradio wrote no stub into facepcl
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    assert photo.preprocess(ImageData(path=str(text), orig_name="notes.jpg")) == str(text)
    assert photo.preprocess(None) is None


@pytest.mark.slow
def test_a_huge_photo_is_drawn_on_its_reduced_decode(demo_model, tmp_path, monkeypatch) -> None:
    from PIL import Image

    from facepcl.io import images
    from tests import _samples

    big = Image.open(_samples.astronaut()).convert("RGB").resize((3072, 3072), Image.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=90)
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1_000_000)
    monkeypatch.setattr(demo_model.embedder, "decode_min_side", 1024)
    a = demo_model.analyze(str(tmp_path / "big.jpg"))
    assert a.count == 1
    assert a.annotated.size == (1536, 1536)  # decoded at 1/2: the longer side stays >= 1024
    assert a.result.bbox[0, 2] > 1536  # results in the file's pixels
