"""The web page in a real browser: Debian's Chromium driven by Playwright (never a downloaded browser). An upload
draws the API's boxes; the confidence slider and the class toggles filter them as the API would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page's test needs playwright (pip install "
                               "playwright; it drives the system's chromium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium): the page is not tested in a browser",
                allow_module_level=True)

from serving import served, tiny_checkpoint  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FLOOR = 0.01  # what the page asks the API for; its slider filters above it


@pytest.fixture(scope="module")
def site(coco128, tmp_path_factory):
    weights, images = tiny_checkpoint(coco128, tmp_path_factory.mktemp("page"))
    with served(weights) as url:
        yield url, images


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def _api(url: str, image: Path, **params) -> list[dict]:
    with open(image, "rb") as f:
        answer = httpx.post(f"{url}/v1/detect", params={"conf": FLOOR, **params}, timeout=60,
                            files={"file": (image.name, f, "image/jpeg")})
    assert answer.status_code == 200, answer.text
    return answer.json()["detections"]


def _drawn(page) -> list[dict]:
    return json.loads(page.text_content("#drawn-boxes"))


def _same(drawn: list[dict], api: list[dict]) -> None:
    assert len(drawn) == len(api) > 0
    for d, a in zip(drawn, api):
        assert (d["class_id"], d["class_name"]) == (a["class_id"], a["class_name"])
        np.testing.assert_allclose(d["box"], a["box"], atol=1e-3)


def _slide(page, value: float) -> None:
    page.eval_on_selector("#conf", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def test_the_page_draws_the_apis_boxes_and_filters_them(site, browser, tmp_path):
    url, images = site
    image = images[1]
    everything = _api(url, image)
    page = browser.new_page(viewport={"width": 1100, "height": 620})
    page.goto(url)
    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    assert "ms" in page.text_content("#time") and page.is_hidden("#error")

    _slide(page, FLOOR)
    _same(_drawn(page), everything)

    scores = sorted({d["score"] for d in everything}, reverse=True)
    threshold = (scores[9] + scores[10]) / 2  # between two scores: JSON rounds them to 1e-5
    _slide(page, threshold)
    _same(_drawn(page), _api(url, image, conf=threshold))

    _slide(page, FLOOR)
    top = everything[0]["class_id"]
    page.uncheck(f"#classes input[data-class-id='{top}']")
    others = ",".join(str(c) for c in sorted({d["class_id"] for d in everything} - {top}))
    _same(_drawn(page), _api(url, image, classes=others))
    page.check(f"#classes input[data-class-id='{top}']")
    _same(_drawn(page), everything)

    _slide(page, threshold)
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.close()


def test_the_page_says_what_went_wrong(site, browser, tmp_path):
    url, _ = site
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page = browser.new_page()
    page.goto(url)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state=error]", timeout=60_000)
    assert page.text_content("#error").startswith("400:") and _drawn(page) == []
    page.close()
