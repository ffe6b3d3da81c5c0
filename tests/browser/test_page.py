"""The page at ``/`` and the API docs in a real browser (Debian's Chromium through Playwright).

A gateway serves the bundled model on loopback (one without API keys, one with); every test
records every request the page makes and aborts any to another host, so "works offline" and
"sends nothing elsewhere" are both checked. What is drawn is checked per view (the kinds say
how each task is drawn): maps decoded and laid on the image, legends, keys and labels shown.
Screenshots go to test-artifacts/page/; one sample's also to docs/images/ (committed).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Request, sync_playwright

from tests.gateway import ROOT, gateway_process
from tests.images import encode, scene_image

CHROMIUM = Path("/usr/bin/chromium")
SAMPLES = ROOT / "serving" / "api" / "static" / "samples"
ARTIFACTS = ROOT / "test-artifacts" / "page"
DOCS_IMAGES = ROOT / "docs" / "images"
KEY = "browser-test-key-0123456789"
DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
# how long the page may take to answer or draw: generous, CI machines are shared and slow
WAIT_MS = 60_000
# Chromium logs a failed fetch (a 4xx the page then explains) as a console error
FAILED_FETCH = "Failed to load resource: the server responded with a status of 4"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make install-browser-test`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "model_repo" / "scenes", root / "scenes")
    return root


@pytest.fixture(scope="module")
def open_url(repo) -> Iterator[str]:
    with gateway_process(repo, reload_interval_s="0") as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(repo) -> Iterator[str]:
    with gateway_process(repo, reload_interval_s="0", api_keys=json.dumps([KEY])) as url:
        yield url


class Session:
    """A page in a fresh context, with every request and console message recorded."""

    def __init__(self, browser: Browser, url: str, viewport: dict[str, int]) -> None:
        self.url = url
        self.host = urlsplit(url).netloc
        self.context = browser.new_context(viewport=viewport, service_workers="block")
        self.requests: list[Request] = []
        self.foreign: list[str] = []
        self.console: list[str] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        # Playwright turns file-chooser interception on asynchronously when the first listener
        # comes; subscribing here, long before a key opens the chooser, takes out the race in
        # which the key press wins and the chooser opens natively (no event)
        self.page.on("filechooser", lambda chooser: None)

    def _route(self, route) -> None:
        split = urlsplit(route.request.url)
        if split.scheme in ("http", "https", "ws", "wss") and split.netloc != self.host:
            self.foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.url + path)
        return self.page

    def check(self, allow_failed_fetches: bool = False) -> None:
        """Nothing left the gateway, and the console is clean."""
        # a request the page's Content-Security-Policy refused never left the browser
        sent = [r for r in self.requests if r.failure not in ("csp", "net::ERR_BLOCKED_BY_CSP")]
        hosts = {urlsplit(r.url).netloc for r in sent if r.url.startswith("http")}
        assert hosts <= {self.host}, [r.url for r in sent]
        assert not self.foreign, self.foreign
        errors = [
            m
            for m in self.console
            if not (allow_failed_fetches and FAILED_FETCH in m)
            # the tests' own pixel reads
            and "willReadFrequently" not in m
            # Redoc's sidebar logo from its vendor's CDN, refused by the page's policy
            and not ("Content Security Policy" in m and "cdn.redoc.ly" in m)
        ]
        assert not errors, errors


@pytest.fixture
def session(browser, open_url) -> Iterator[Session]:
    s = Session(browser, open_url, DESKTOP)
    yield s
    s.context.close()


def described(url: str, key: str | None = None, model: str = "scenes") -> dict:
    import httpx

    headers = {"x-api-key": key} if key else {}
    return httpx.get(f"{url}/v1/models/{model}", headers=headers, timeout=10).json()


def wait_for_prediction(page: Page, file: str) -> None:
    """Until the page shows the prediction of ``file`` and is no longer busy."""
    page.wait_for_function(
        "file => document.querySelector('#out').getAttribute('aria-busy') === 'false'"
        " && document.querySelectorAll('#out .card[data-task]').length > 0"
        " && document.querySelector('#out .card.input').innerText.includes(file)",
        arg=file,
        timeout=WAIT_MS,
    )


def assert_every_task_drawn(page: Page, model: dict) -> None:
    """Each task's card drew what its view says: maps with pixels, legends, keys, labels."""
    assert page.inner_text("#err") == ""
    broken = page.evaluate(
        "() => [...document.images].filter(i => !i.complete || !i.naturalWidth).map(i => i.src)"
    )
    assert broken == [], broken
    for task in model["tasks"]:
        name, view = task["name"], task["view"]
        card = page.locator(f".card[data-task='{name}']")
        assert card.count() == 1, name
        assert card.locator(".err").count() == 0, card.inner_text()
        if "map" in view:
            size = card.locator(".figure canvas").evaluate(
                "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let lit = 0; for (let i = 0; i < d.length; i += 4) lit += d[i] + d[i+1] + d[i+2] > 0;"
                " return [c.width, c.height, lit, c.getBoundingClientRect().width]; }"
            )
            assert size[0] > 0 and size[1] > 0 and size[2] > size[0] and size[3] > 50, (name, size)
            assert card.locator("input[type=range]").count() == 1, name
        draw = view["draw"]
        if draw == "classes":
            entries = card.locator(".legend li").all_inner_texts()
            assert entries and all(
                any(label in e for label in task["labels"]) and "%" in e for e in entries
            ), entries
        elif draw == "heat":
            ticks = card.locator(".ticks span").all_inner_texts()
            units = f" {task['units']}" if task.get("units") else ""
            assert len(ticks) == 3 and all(t.endswith(units) for t in ticks), ticks
        elif draw == "rgb":
            assert card.locator("canvas.ball").count() == 1
            assert "red" in card.inner_text() and "blue" in card.inner_text()
        elif draw == "overlay":
            assert "over the threshold" in card.inner_text()
        elif draw == "ranked":
            answer = card.locator(".answer strong").inner_text()
            assert answer in task["labels"], answer
            assert card.locator(".bars li").count() == min(5, len(task["labels"]))
        elif draw == "values":
            values = card.locator("ul.values li").all_inner_texts()
            assert len(values) == task["output_shape"][-1] and all(": " in v for v in values), (
                values
            )
        elif draw == "scores":
            assert card.locator(".bars li").count() == len(task["labels"])
            assert card.locator(".bars .threshold").count() == len(task["labels"])
            over = card.locator(".bars li.over .bar-label").all_inner_texts()
            answer = card.locator(".answer").inner_text()
            assert all(o.rstrip(" ✓") in answer for o in over), (over, answer)


def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def photo_jpeg() -> bytes:
    """A photo-sized JPEG (640x480) of a scene, as a user would send."""
    return encode(scene_image(11, (640, 480)), "JPEG")


def transparent_png() -> bytes:
    """A scene whose left half is fully transparent (with colour under it the model never sees)."""
    rgba = np.array(scene_image(12, (160, 120)).convert("RGBA"))
    rgba[:, :80, :3] = 255
    rgba[:, :80, 3] = 0
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


# ---- the page ----------------------------------------------------------------------------------


def test_every_sample_renders_every_task(session, open_url):
    model = described(open_url)
    page = session.open()
    buttons = page.locator("#samples button")
    buttons.nth(2).wait_for()
    names = json.loads((SAMPLES / "index.json").read_text())["samples"]
    assert buttons.count() == len(names) == 3
    for i, sample in enumerate(names):
        assert (SAMPLES / sample["file"]).stat().st_size < 40_000
        buttons.nth(i).click()
        wait_for_prediction(page, sample["file"])
        assert_every_task_drawn(page, model)
        assert "ms (round trip)" in page.inner_text("#status")
        shoot(page, f"sample-{i}-desktop")
    session.check()


def test_user_photo_and_transparent_png_by_file_and_by_drop(session, open_url):
    model = described(open_url)
    page = session.open()
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files(
        "#file", files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": photo_jpeg()}]
    )
    wait_for_prediction(page, "photo.jpg")
    assert "640×480" in page.inner_text(".card.input")
    assert_every_task_drawn(page, model)
    shoot(page, "photo-640x480")

    # dropped on the drop zone, as a person drags a file from the desktop
    data = list(transparent_png())
    transfer = page.evaluate_handle(
        "bytes => { const t = new DataTransfer();"
        " t.items.add(new File([new Uint8Array(bytes)], 'clear.png', {type: 'image/png'}));"
        " return t; }",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    wait_for_prediction(page, "clear.png")
    assert_every_task_drawn(page, model)
    # the preview shows the transparent half on black, as serving/preprocess.py gives it the model
    left, right = page.locator(".card.input canvas").evaluate(
        "c => { const x = c.getContext('2d'); const w = c.width, h = c.height;"
        " return [Array.from(x.getImageData(w / 4, h / 2, 1, 1).data),"
        " Array.from(x.getImageData(3 * w / 4, h / 2, 1, 1).data)]; }"
    )
    assert left[:3] == [0, 0, 0] and sum(right[:3]) > 0, (left, right)
    shoot(page, "transparent-png")
    session.check()


def test_a_file_that_is_not_an_image_shows_the_servers_error(session):
    page = session.open()
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}]
    )
    alert = page.locator("#err[role=alert]")
    alert.wait_for(state="visible")
    assert "not a supported image" in alert.inner_text()
    assert "No prediction" in page.inner_text("#status")
    shoot(page, "error-not-an-image")
    session.check(allow_failed_fetches=True)


def test_keyboard_reaches_and_operates_every_control(session):
    page = session.open()
    page.wait_for_selector("#model option", state="attached")
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input, select, button')]"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))"
        ".map(e => e.outerHTML)"
    )
    assert unlabelled == []
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.id"))
        if reached[-1] == "drop":
            break
    assert reached[:4] == ["model", "version", "key", "drop"], reached
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(
        files=[
            {
                "name": "scene.png",
                "mimeType": "image/png",
                "buffer": (SAMPLES / "scene-1.png").read_bytes(),
            }
        ]
    )
    wait_for_prediction(page, "scene.png")
    # task toggles: a checkbox per task hides and shows its card
    toggle = page.locator("#show-depth")
    toggle.focus()
    page.keyboard.press("Space")
    assert page.locator(".card[data-task=depth]").is_hidden()
    page.keyboard.press("Space")
    assert page.locator(".card[data-task=depth]").is_visible()
    session.check()


def test_narrow_screen_and_the_docs_screenshots(browser, open_url):
    """Every sample at 390 px (and the first at 1280): nothing overflows, every task is drawn.

    The README's two pictures are written beside the artefacts, and over
    ``docs/images/page-*.png`` only with ``POLYHEAD_UPDATE_DOCS_IMAGES=1`` (a test run never
    rewrites tracked files).
    """
    model = described(open_url)
    names = [s["file"] for s in json.loads((SAMPLES / "index.json").read_text())["samples"]]
    for viewport, name, samples in ((NARROW, "narrow", names), (DESKTOP, "desktop", names[:1])):
        s = Session(browser, open_url, viewport)
        try:
            page = s.open()
            for i, sample in enumerate(samples):
                page.locator("#samples button").nth(i).click()
                wait_for_prediction(page, sample)
                assert_every_task_drawn(page, model)
                width = page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= viewport["width"], width
                shoot(page, f"sample-{i}-{name}")
            page.locator("#samples button").first.click()
            wait_for_prediction(page, names[0])
            height = 1400 if name == "narrow" else 1100
            shot = page.screenshot(
                clip={"x": 0, "y": 0, "width": viewport["width"], "height": height},
                full_page=True,
            )
            # a palette PNG keeps the committed picture small (and the text sharp)
            small = Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=128)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            target = ARTIFACTS / f"page-{name}.png"
            small.save(target, format="PNG", optimize=True)
            assert target.stat().st_size < 200_000
            if os.environ.get("POLYHEAD_UPDATE_DOCS_IMAGES") == "1":
                shutil.copy(target, DOCS_IMAGES / target.name)
            s.check()
        finally:
            s.context.close()


def test_with_api_keys_every_call_carries_the_key(browser, keyed_url):
    model = described(keyed_url, KEY)
    s = Session(browser, keyed_url, DESKTOP)
    try:
        page = s.open()
        alert = page.locator("#err")
        alert.wait_for(state="visible")
        assert "Could not list the models" in alert.inner_text()
        assert "API key" in alert.inner_text()
        assert page.locator("#model").is_disabled()

        page.fill("#key", KEY)
        page.press("#key", "Enter")  # change: the key is kept and the models fetched again
        page.wait_for_selector("#model option", state="attached")
        assert page.inner_text("#err") == ""
        page.locator("#samples button").nth(2).click()
        wait_for_prediction(page, "scene-2.png")
        assert_every_task_drawn(page, model)

        page.reload()  # the key is kept for the tab's session: the list loads at once
        page.wait_for_selector("#model option", state="attached")
        assert page.input_value("#key") == KEY
        page.locator("#samples button").first.click()
        wait_for_prediction(page, "scene-0.png")
        api = [r for r in s.requests if urlsplit(r.url).path.startswith("/v1/")]
        with_key = [r for r in api if r.headers.get("x-api-key") == KEY]
        assert {urlsplit(r.url).path for r in with_key} >= {
            "/v1/models",
            "/v1/models/scenes",
            "/v1/models/scenes/predict",
        }
        # only the first list, before a key was typed, went without one
        assert len(api) - len(with_key) == 1, [r.url for r in api if r not in with_key]
        assert all("//predict" not in r.url for r in api)
        s.check(allow_failed_fetches=True)
    finally:
        s.context.close()


# ---- the API docs -----------------------------------------------------------------------------


def test_docs_and_redoc_render_from_the_gateway_alone(session):
    import httpx

    icon = httpx.get(session.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")

    page = session.open("/docs")
    page.wait_for_selector(".opblock", timeout=WAIT_MS)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/models/{name}/predict" in p.replace("\u200b", "") for p in paths), paths
    shoot(page, "docs")

    page = session.open("/redoc")
    page.wait_for_selector("h1", timeout=WAIT_MS)
    assert "polyhead" in page.locator("h1").first.inner_text()
    page.get_by_text("/v1/models/{name}/predict").first.wait_for(timeout=WAIT_MS)
    shoot(page, "redoc")
    statics = {urlsplit(r.url).path for r in session.requests}
    assert any(p.endswith("swagger-ui-bundle.js") for p in statics), statics
    assert any(p.endswith("redoc.standalone.js") for p in statics), statics
    session.check()


def test_docs_try_it_out_sends_the_key_given_to_authorize(browser, keyed_url):
    """With API keys set, /docs' Authorize takes the key and "Try it out" sends it: 200."""
    s = Session(browser, keyed_url, DESKTOP)
    try:
        page = s.open("/docs")
        page.wait_for_selector(".opblock", timeout=WAIT_MS)
        page.locator("button.authorize").first.click()
        dialog = page.locator(".dialog-ux")
        dialog.locator("input").first.fill(KEY)  # the X-API-Key scheme comes first
        dialog.locator("button.authorize").first.click()
        dialog.locator("button.btn-done").first.click()
        block = page.locator(".opblock-get", has=page.locator('[data-path="/v1/models"]')).first
        block.locator(".opblock-summary").click()
        block.locator("button.try-out__btn").click()
        block.locator("button.execute").click()
        code = block.locator(".live-responses-table tbody .response-col_status").first
        code.wait_for(timeout=WAIT_MS)
        assert code.inner_text().strip() == "200", block.inner_text()
        sent = [r for r in s.requests if urlsplit(r.url).path == "/v1/models"]
        assert sent and all(r.headers.get("x-api-key") == KEY for r in sent)
        shoot(page, "docs-authorized")
        s.check()
    finally:
        s.context.close()


# ---- every kind the server knows --------------------------------------------------------------


@pytest.fixture(scope="module")
def every_kind_url(tmp_path_factory) -> Iterator[str]:
    """A gateway serving one model with a task of every kind the server registers."""
    from serving.kinds import KINDS
    from tests.onnx_models import task_of, write_version

    kinds = sorted(k for k in KINDS if not k.startswith("toy"))  # a test's own kind stays out
    root = tmp_path_factory.mktemp("every-kind")
    write_version(root, "allkinds", 1, [task_of(k, name=f"t_{k}") for k in kinds], (48, 64))
    with gateway_process(root, reload_interval_s="0") as url:
        yield url


def test_every_kind_the_server_knows_is_drawn(browser, every_kind_url):
    """Saliency and regression too, which the bundled model does not have: each card drawn."""
    model = described(every_kind_url, model="allkinds")
    assert {"saliency", "regression"} <= {t["kind"] for t in model["tasks"]}
    s = Session(browser, every_kind_url, DESKTOP)
    try:
        page = s.open()
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files(
            "#file", files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": photo_jpeg()}]
        )
        wait_for_prediction(page, "photo.jpg")
        assert_every_task_drawn(page, model)
        shoot(page, "every-kind")
        s.check()
    finally:
        s.context.close()
