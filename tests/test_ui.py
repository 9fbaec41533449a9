"""The playground (/ui) in a real headless Chromium against the real server on loopback, API keys on: no data
without a key; classify uploaded images and see the right label's bar; a bad label list shows the API's message
next to the field; a collection with thumbnails, searched by text (the right thumbnail first) and by "more like
this"; a new catalogue item recommended at once; the status tab; every request stays on loopback. Screenshots of
each tab at 1280x800 (and one at phone width) go to the test's tmp dir, printed at the end."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from PIL import Image
from selenium.webdriver.support.ui import Select

from tests import browser as B
from tests.images import drawing as draw_png
from tests.server import Server, serving

KEY = "playground-test-key"
WAIT_S = 90  # the first model calls on a shared 2-core machine


def _skip_loudly() -> None:
    why = B.missing()
    if why:
        banner = "!" * 100
        print(f"\n{banner}\nSKIPPING THE BROWSER TESTS OF THE PLAYGROUND: {why}\n{banner}\n")
        pytest.skip(f"NO BROWSER: {why}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _skip_loudly()
    home = tmp_path_factory.mktemp("ui-home")
    with serving(Server({"ZEST_DATA_DIR": str(home / "data"), "BENTOML_HOME": str(home), "ZEST_API_KEYS": KEY},
                        home / "server.log")) as srv:  # the shipped zest-tiny and recommender
        yield srv


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ui-screenshots")
    yield out
    print(f"\nplayground screenshots: {out}")


@pytest.fixture(scope="module")
def browser(server):
    b = B.Browser()
    b.viewport(1280, 800)
    yield b
    b.close()


def drawing(directory: Path, name: str, draw) -> Path:
    """A plain PIL drawing (not zest-tiny's training renderer): what a user's own picture of a shape may be."""
    path = directory / f"{name}.png"
    path.write_bytes(draw_png(draw, (220, 220)))
    return path


SHAPES = {
    "red_circle": lambda d: d.ellipse((40, 40, 180, 180), fill=(220, 30, 30)),
    "red_circle_small": lambda d: d.ellipse((90, 70, 170, 150), fill=(200, 20, 35)),
    "blue_square": lambda d: d.rectangle((50, 50, 170, 170), fill=(30, 60, 220)),
    "yellow_triangle": lambda d: d.polygon([(110, 35), (185, 180), (35, 180)], fill=(240, 220, 30)),
    "green_circle": lambda d: d.ellipse((30, 60, 130, 160), fill=(30, 170, 50)),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("ui-images")
    return {name: drawing(directory, name, draw) for name, draw in SHAPES.items()}


# -- helpers ------------------------------------------------------------------------------------------------
def wait(browser, condition, what: str, timeout: float = WAIT_S):
    """`condition(driver)` until truthy (its value), or fail naming `what` and the page's console errors."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = condition(browser.driver)
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the element is not there yet
            last_exc = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} ({last_exc}); console: {browser.console_errors()}")


def js(browser, script: str, *args):
    return browser.driver.execute_script(script, *args)


def by_id(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.driver.find_element(By.ID, element_id)


def text_of(browser, element_id: str) -> str:
    return js(browser, "const e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null",
              element_id)


def open_with_key(browser, server, tab: str = "classify") -> None:
    browser.driver.get(f"{server.url}/ui#{tab}")
    js(browser, "sessionStorage.setItem('zest.apiKey', arguments[0])", KEY)
    browser.driver.refresh()
    wait(browser, lambda d: js(browser, "return document.body.dataset.ready === '1'"), "the page to start")


def shoot(browser, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    js(browser, "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    browser.driver.save_screenshot(str(path))
    assert Image.open(path).size == (1280, 800) or name.endswith("phone"), Image.open(path).size
    return path


def assert_loopback(browser, server) -> list[str]:
    """Every http(s)/ws request the pages made went to this server on 127.0.0.1 (chrome:// pages of the browser
    itself, data: and blob: URLs never leave the machine)."""
    urls = browser.requests()
    remote = [u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    assert remote, "no request recorded at all"
    outside = [u for u in remote if urlparse(u).hostname != "127.0.0.1" or urlparse(u).port != server.port]
    assert not outside, outside
    return remote


# -- tests --------------------------------------------------------------------------------------------------
def test_without_a_key_the_page_asks_for_one_and_shows_no_data(browser, server, shots):
    d = browser.driver
    d.get(f"{server.url}/ui#status")
    wait(browser, lambda _: by_id(browser, "key-panel").is_displayed(), "the key prompt")
    assert not by_id(browser, "panel-status").is_displayed() and not by_id(browser, "panel-classify").is_displayed()
    assert text_of(browser, "status-grid") == "" and text_of(browser, "server-line") == ""
    assert js(browser, "return document.getElementById('cls-templates').options.length") == 0  # no API data
    assert requests.get(f"{server.url}/ui", timeout=10).status_code == 200  # the page itself is public
    assert requests.get(f"{server.url}/info", timeout=10).status_code == 401
    shoot(browser, shots, "0-api-key")
    by_id(browser, "key-input").send_keys("wrong-key")
    by_id(browser, "key-save").click()
    wait(browser, lambda _: "not accepted" in text_of(browser, "key-error"), "the wrong key refused")
    assert text_of(browser, "status-grid") == ""
    by_id(browser, "key-input").clear()
    by_id(browser, "key-input").send_keys(KEY)
    by_id(browser, "key-save").click()
    wait(browser, lambda _: by_id(browser, "panel-status").is_displayed(), "the status tab after the key")
    wait(browser, lambda _: "zest-tiny" in text_of(browser, "server-line"), "the model in the header")
    assert js(browser, "return sessionStorage.getItem('zest.apiKey')") == KEY
    assert js(browser, "return localStorage.getItem('zest.apiKey')") is None  # this tab only
    assert_loopback(browser, server)


def test_classify_uploaded_images_shows_the_right_labels_bar(browser, server, shots, images):
    open_with_key(browser, server)
    labels = ["red circle", "blue square", "yellow triangle", "green circle"]
    files = [images["red_circle"], images["blue_square"], images["yellow_triangle"]]
    by_id(browser, "cls-files").send_keys("\n".join(str(f) for f in files))
    by_id(browser, "cls-labels").clear()
    by_id(browser, "cls-labels").send_keys(", ".join(labels))
    js(browser, "document.getElementById('cls-templates').value = 'photo'")
    by_id(browser, "cls-run").click()
    cards = wait(browser, lambda _: js(browser, "return [...document.querySelectorAll('.result-card')].map(c => "
                                                "[c.dataset.image, [...c.querySelectorAll('.bar')].map(b => "
                                                "[b.dataset.label, +b.dataset.probability, "
                                                "b.querySelector('.fill').getBoundingClientRect().width])])"),
                 "classification results")
    assert [c[0] for c in cards] == [f.name for f in files]
    for (name, bars), want in zip(cards, ["red circle", "blue square", "yellow triangle"]):
        assert bars[0][0] == want, (name, bars)  # the predicted label first, as the top bar
        assert bars[0][1] > bars[1][1] and bars[0][2] > bars[1][2] > 0, bars  # its bar is the longest
    assert text_of(browser, "cls-latency").startswith("latency") and " ms" in text_of(browser, "cls-latency")
    scoring = requests.post(f"{server.url}/classify", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                            files=[("images", ("a.png", files[0].read_bytes(), "image/png"))],
                            data={"labels": "red circle,blue square"}).json().get("scoring")
    if scoring is not None:  # the scoring rule, where the API reports one
        assert text_of(browser, "cls-scoring") == f"scoring {scoring}"
    # the class list is remembered by the browser
    open_with_key(browser, server)
    assert by_id(browser, "cls-labels").get_attribute("value") == ", ".join(labels)
    by_id(browser, "cls-files").send_keys("\n".join(str(f) for f in files))
    by_id(browser, "cls-run").click()
    wait(browser, lambda _: len(js(browser, "return document.querySelectorAll('.result-card')")) == 3, "results")
    shoot(browser, shots, "1-classify")
    assert_loopback(browser, server)


def test_a_bad_label_list_shows_the_apis_message_next_to_the_field(browser, server, images):
    open_with_key(browser, server)
    by_id(browser, "cls-files").send_keys(str(images["green_circle"]))
    by_id(browser, "cls-labels").clear()
    by_id(browser, "cls-labels").send_keys("cat, dog, cat")
    by_id(browser, "cls-run").click()
    message = wait(browser, lambda _: text_of(browser, "cls-labels-error"), "the labels field's error")
    assert message == "label 'cat' appears more than once", message  # the API's own words
    assert by_id(browser, "cls-labels").get_attribute("aria-invalid") == "true"
    assert js(browser, "return document.querySelectorAll('.result-card').length") == 0
    # custom templates: a template without its {} is refused, and said so under the templates box
    by_id(browser, "cls-labels").clear()
    by_id(browser, "cls-labels").send_keys("green circle\nred circle")
    Select(by_id(browser, "cls-templates")).select_by_value("__custom")
    assert by_id(browser, "cls-custom").is_displayed()
    by_id(browser, "cls-custom").send_keys("a drawing of a shape")
    by_id(browser, "cls-run").click()
    message = wait(browser, lambda _: text_of(browser, "cls-custom-error"), "the custom templates' error")
    assert "has no {} placeholder" in message, message
    assert text_of(browser, "cls-labels-error") == ""  # the old message is gone
    by_id(browser, "cls-custom").clear()
    by_id(browser, "cls-custom").send_keys("a drawing of a {}.\na simple picture of a {}.")
    by_id(browser, "cls-run").click()
    bars = wait(browser, lambda _: js(browser, "return [...document.querySelectorAll('.result-card .bar')]"
                                               ".map(b => b.dataset.label)"), "results with custom templates")
    assert bars[0] == "green circle", bars
    assert "custom" in text_of(browser, "cls-meta") or "×2" in text_of(browser, "cls-meta"), text_of(browser, "cls-meta")


def test_search_a_collection_with_thumbnails_and_more_like_this(browser, server, shots, images):
    open_with_key(browser, server, "search")
    js(browser, "document.getElementById('col-manage').open = true")
    by_id(browser, "col-new-name").send_keys("shapes")
    assert by_id(browser, "col-new-thumbs").is_selected()  # thumbnails on by default in the form
    by_id(browser, "col-create").click()
    wait(browser, lambda _: js(browser, "return document.getElementById('col-select').value") == "shapes",
         "the new collection selected")
    by_id(browser, "col-files").send_keys("\n".join(str(p) for p in images.values()))
    by_id(browser, "col-add").click()
    wait(browser, lambda _: "5 items in shapes" in text_of(browser, "col-add-ok"), "the images indexed")
    by_id(browser, "srch-text").send_keys("a photo of a red circle")
    by_id(browser, "srch-run").click()

    def hits():
        return js(browser, "return [...document.querySelectorAll('#srch-results .hit')].map(h => [h.dataset.id, "
                           "!!(h.querySelector('img.pic') && h.querySelector('img.pic').dataset.loaded)])")

    found = wait(browser, lambda _: (h := hits()) and all(loaded for _, loaded in h) and h, "thumbnail results")
    assert [i for i, _ in found[:2]] in (["red_circle.png", "red_circle_small.png"],
                                         ["red_circle_small.png", "red_circle.png"]), found
    # the first thumbnail shown is the red circle's picture: its centre pixel, read back from the page
    rgb = js(browser, """const img = document.querySelector('#srch-results .hit img.pic');
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return [...g.getImageData(Math.floor(c.width * 0.6), Math.floor(c.height / 2), 1, 1).data].slice(0, 3);""")
    assert rgb[0] > 150 and rgb[1] < 90 and rgb[2] < 90, rgb
    shoot(browser, shots, "2-search")
    first = found[0][0]
    by_id(browser, "srch-results").find_element("css selector", ".hit").click()  # "more like this"
    wait(browser, lambda _: f"more like {first}" in text_of(browser, "srch-meta"), "the more-like-this search")
    like = wait(browser, lambda _: (h := hits()) and first not in [i for i, _ in h] and h, "more-like-this results")
    other = ({"red_circle.png", "red_circle_small.png"} - {first}).pop()
    assert like[0][0] == other, like  # the other red circle is the nearest item
    by_id(browser, "srch-file").send_keys(str(images["blue_square"]))  # search by an image of one's own
    wait(browser, lambda _: "blue_square.png" in text_of(browser, "srch-meta"), "the search by image")
    by_image = wait(browser, lambda _: hits(), "image search results")
    assert by_image[0][0] == "blue_square.png" and len(by_image) == 5, by_image
    assert_loopback(browser, server)


def test_a_new_item_is_recommended_at_once(browser, server, shots):
    seed = [{"id": "toy", "text": "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy"},
            {"id": "lion", "text": "Lion King, The (1994). Genres: Adventure, Animation, Children, Drama, Musical"},
            {"id": "saw", "text": "Saw (2004). Genres: Horror, Mystery, Thriller"},
            {"id": "hostel", "text": "Hostel (2005). Genres: Horror"}]
    r = requests.post(f"{server.url}/items", json={"items": seed}, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60)
    assert r.status_code == 200, r.text

    def ranked():
        return js(browser, "return [...document.querySelectorAll('#rec-results .rec')].map(r => r.dataset.id)")

    open_with_key(browser, server, "recommend")
    by_id(browser, "rec-history").send_keys("toy, lion")
    by_id(browser, "rec-run").click()
    before = wait(browser, lambda _: ranked(), "recommendations")
    assert set(before) == {"saw", "hostel"}, before  # the liked items themselves are left out
    by_id(browser, "rec-new-id").send_keys("new-cartoon")
    by_id(browser, "rec-new-text").send_keys("A new animated family comedy about talking toys. "
                                             "Genres: Animation, Children")
    by_id(browser, "rec-add").click()
    wait(browser, lambda _: "new-cartoon" in ranked(), "the new item recommended")
    after = ranked()
    assert after[0] == "new-cartoon", after  # no interactions at all, recommended first the moment it is added
    assert js(browser, "return document.querySelector('#rec-results .rec.new .badge').textContent") == "just added"
    scores = js(browser, "return [...document.querySelectorAll('#rec-results .score')].map(s => +s.textContent)")
    assert scores == sorted(scores, reverse=True) and len(scores) == len(after)
    texts = js(browser, "return [...document.querySelectorAll('#rec-results .text')].map(t => t.textContent)")
    assert texts[0].startswith("A new animated family comedy")  # each item shown with its description
    shoot(browser, shots, "3-recommend")
    by_id(browser, "rec-results").find_element("css selector", "button[aria-label='Like saw']").click()
    wait(browser, lambda _: "saw" in by_id(browser, "rec-history").get_attribute("value") and "saw" not in ranked(),
         "a liked result moved into the history")
    assert_loopback(browser, server)


def test_status_tab_and_keyboard_and_phone_width(browser, server, shots):
    open_with_key(browser, server, "classify")
    from selenium.webdriver.common.keys import Keys

    by_id(browser, "tab-classify").send_keys(Keys.ARROW_RIGHT)  # the tabs are keyboard-usable
    assert by_id(browser, "tab-search").get_attribute("aria-selected") == "true"
    assert js(browser, "return document.activeElement.id") == "tab-search"
    by_id(browser, "tab-search").send_keys(Keys.END)
    assert by_id(browser, "panel-status").is_displayed()
    wait(browser, lambda _: js(browser, "return document.getElementById('status-grid').dataset.loaded"), "status")
    status = text_of(browser, "status-grid")
    for want in ("zest-tiny", "256", "torch", "cpu", "zest-clip-encoder ready", "zest-recommender ready", "photo",
                 "imagenet"):
        assert want in status, (want, status)
    assert "Class-cache hit rate" in status and "%" in status, status  # the earlier classify calls hit the cache
    shoot(browser, shots, "4-status")
    browser.viewport(390, 844, mobile=True)
    try:
        browser.driver.get(f"{server.url}/ui#classify")
        wait(browser, lambda _: js(browser, "return document.body.dataset.ready === '1'"), "the page at phone width")
        assert js(browser, "return document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scroll
        shoot(browser, shots, "5-classify-phone")
    finally:
        browser.viewport(1280, 800)
    assert_loopback(browser, server)
    assert {urlparse(u).path for u in browser.requests()} >= {"/ui", "/ui/app.js", "/ui/style.css", "/info"}
