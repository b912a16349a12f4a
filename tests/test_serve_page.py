"""The upload page at `GET /`: a person picks a picture, sends it and sees the answer — the
same answer `persistkit predict` gives for that file. Tested by its HTTP behaviour always, and
in headless Chromium driven by Playwright where both are installed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import persistkit
from persistkit.cli import main
from persistkit.server import ModelRepository, create_app
from serve_helpers import (
    Digits,
    RunningServer,
    digits,
    running_server,
    train_digits_model,
    write_png,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Page:
    server: RunningServer
    http: httpx.Client
    data: Digits
    model: Any
    store: Path
    home: Path


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    data = digits()
    model = train_digits_model(data)
    store_dir = tmp_path_factory.mktemp("page-store")
    home = tmp_path_factory.mktemp("page-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PERSISTKIT_HOME", str(home))
        persistkit.Store(store_dir).save(model, "digits", example=data.rows[:5])
        app = create_app(ModelRepository(["digits"], store=str(store_dir)))
        with running_server(app) as server, httpx.Client(base_url=server.url) as http:
            yield Page(server, http, data, model, store_dir, home)


def test_page_is_html_with_a_picture_picker_and_a_send_button(page: Page) -> None:
    response = page.http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<input id="picture"' in html and 'type="file"' in html
    assert '<button id="send"' in html
    assert "/ui/predict/" in html and "/ui/models" in html


def test_page_lists_the_served_models(page: Page) -> None:
    models = page.http.get("/ui/models").json()
    assert [(m["name"], m["version"]) for m in models] == [("digits", "1")]
    assert models[0]["inputs"][0]["shape"] == [-1, 64]


def test_picture_sent_from_the_page_gets_the_same_answer_as_the_cli(
    page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTKIT_HOME", str(page.home))
    for index in (0, 11, 42):
        png = write_png(page.data.pictures[index], tmp_path / f"{index}.png")
        cli = CliRunner().invoke(
            main, ["predict", "digits", str(png), "--store", str(page.store), "--json"]
        )
        served = page.http.post("/ui/predict/digits", content=png.read_bytes())
        assert served.status_code == 200
        assert served.json()["predictions"] == json.loads(cli.output)["predictions"]
        expected = page.model.predict(page.data.rows[[index]]).tolist()
        assert [p["label"] for p in served.json()["predictions"]] == expected
        assert served.json()["raw"] == expected


def test_page_endpoint_says_what_it_did_to_a_picture_of_another_shape(
    page: Page, tmp_path: Path
) -> None:
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGBA", (20, 12), (255, 255, 255, 255)).save(wide)
    response = page.http.post("/ui/predict/digits", content=wide.read_bytes())
    assert response.status_code == 200
    [warning] = response.json()["warnings"]
    assert "20x12 RGBA -> 8x8 grayscale" in warning
    exact = write_png(page.data.pictures[5], tmp_path / "five.png")
    assert "warnings" not in page.http.post("/ui/predict/digits", content=exact.read_bytes()).json()


def test_page_endpoint_takes_a_version(page: Page, tmp_path: Path) -> None:
    png = write_png(page.data.pictures[5], tmp_path / "five.png")
    response = page.http.post("/ui/predict/digits?version=1", content=png.read_bytes())
    assert response.json()["version"] == "1"


def test_page_endpoint_refuses_a_file_that_is_no_picture(page: Page) -> None:
    response = page.http.post("/ui/predict/digits", content=b"%PDF-1.4 not a picture")
    assert response.status_code == 400
    assert "not a picture" in response.json()["error"]


def test_page_endpoint_refuses_an_empty_upload(page: Page) -> None:
    response = page.http.post("/ui/predict/digits", content=b"")
    assert response.status_code == 400
    assert "no picture" in response.json()["error"]


def test_page_endpoint_answers_404_for_an_unknown_model(page: Page) -> None:
    assert page.http.post("/ui/predict/cats", content=b"x").status_code == 404


def test_chromium_user_picks_a_picture_and_sees_the_answer(page: Page, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    png = write_png(page.data.pictures[8], tmp_path / "eight.png")
    label = page.model.predict(page.data.rows[8:9])[0]
    score = page.model.predict_proba(page.data.rows[8:9])[0][label]
    expected = f"{label} ({score:.2f})"  # as `persistkit predict` prints it
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            tab = browser.new_page()
            tab.goto(page.server.url + "/")
            tab.wait_for_selector("#model option", state="attached")
            tab.set_input_files("#picture", str(png))
            tab.click("#send")
            answer = tab.locator("#answer")
            playwright_api.expect(answer).to_have_text(expected, timeout=10_000)
            top = tab.locator("#top li")
            playwright_api.expect(top).to_have_count(5)
            playwright_api.expect(top.first).to_have_text(f"{label}: {score:.2f}")
            # a picture of another shape: the page says what was done to it
            from PIL import Image

            wide = tmp_path / "wide.png"
            Image.new("RGB", (20, 12), (0, 0, 0)).save(wide)
            tab.set_input_files("#picture", str(wide))
            tab.click("#send")
            playwright_api.expect(tab.locator("#note")).to_contain_text(
                "20x12 RGB -> 8x8 grayscale", timeout=10_000
            )
        finally:
            browser.close()


def test_page_endpoint_gives_the_answer_text_and_the_top_five_scores(
    page: Page, tmp_path: Path
) -> None:
    png = write_png(page.data.pictures[3], tmp_path / "three.png")
    body = page.http.post("/ui/predict/digits", content=png.read_bytes()).json()
    probabilities = page.model.predict_proba(page.data.rows[3:4])[0]
    label = page.model.predict(page.data.rows[3:4])[0]
    [shown] = body["answers"]
    assert shown["text"] == f"{label} ({probabilities[label]:.2f})"
    best = sorted(range(10), key=lambda i: -probabilities[i])[:5]  # ties keep label order
    assert shown["top"] == [{"label": i, "score": probabilities[i]} for i in best]
