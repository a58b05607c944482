"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium, against `up` (real Redis, the demo
camera, the shipped model, the media worker, the API under uvicorn). Nothing is downloaded: the driver and the browser
are /usr/bin/chromedriver and /usr/bin/chromium, and Selenium Manager is kept offline.

Screenshots of each page go to test-artifacts/dashboard/ (git-ignored); two of them are in the README.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from engine.app.service import DEMO_QUERIES, run_up
from engine.contracts.settings import ServiceConfig
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


class Stack:
    """`up` in a thread: the demo camera, the shipped model, the demo queries, the media worker, the API."""

    def __init__(self, redis_url: str, data_dir: Path) -> None:
        self.cfg = ServiceConfig.model_validate({
            "data_dir": str(data_dir),
            "redis": {"url": redis_url},
            "cameras": [{"id": "demo", "url": "synthetic://demo?fps=10"}],
            "queries": DEMO_QUERIES,
            "api": {"port": 0, "webhooks": False},
            "media": {"pre_s": 1.0, "post_s": 1.0},
        })
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run_up, args=(self.cfg, self.lines.append), kwargs={"shutdown": self.stop},
                                       daemon=True)

    def start(self) -> "Stack":
        self.thread.start()
        line = wait_for(lambda: next((s for s in self.lines if s.startswith("Dashboard: ")), None), 120, "the Dashboard line")
        self.url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        self.token = (Path(self.cfg.data_dir) / "api-token").read_text().strip()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def get(self, path: str, **params):
        return httpx.get(self.url + path, params=params, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=3)
    client.flushdb()
    s = Stack(f"redis://127.0.0.1:{redis_server.port}/3", tmp_path_factory.mktemp("dashboard-data")).start()
    yield s
    s.close()
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for (or download) anything
    profile = tempfile.mkdtemp(prefix="svl-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(stack, browser):
    """The dashboard loaded with the admin token typed into its token field."""
    browser.get(stack.url + "/")
    browser.find_element("id", "token").send_keys(stack.token)
    browser.find_element("css selector", "#token-form button").click()
    wait_for(lambda: browser.execute_script("return sessionStorage.getItem('svl-token')") == stack.token, 10, "the token stored")
    return browser


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def test_dashboard_when_loaded_without_a_token_then_the_page_asks_for_one(stack, browser):
    browser.get(stack.url + "/")
    js(browser, "sessionStorage.clear()")
    browser.refresh()
    banner = wait_for(lambda: js(browser, "const b = document.getElementById('banner'); return !b.hidden && b.textContent"),
                      15, "the token banner")
    assert "token" in banner.lower()


def test_live_page_when_demo_camera_runs_then_tile_shows_an_image_that_changes(page):
    # given the Live page, with the demo camera running
    page.find_element("id", "tab-live").click()
    tile_img = "document.querySelector('.tile[data-camera=\"demo\"] img')"

    def shown():
        return js(page, f"const i = {tile_img}; return i && i.complete && i.naturalWidth > 0 ? [i.dataset.ts, i.naturalWidth] : null")

    # when it has shown a frame
    first_ts, width = wait_for(shown, 60, "the live tile's first image")
    # then the image is the preview (320 wide for the demo camera: never upscaled), and a later frame replaces it
    assert width == 320
    wait_for(lambda: (s := shown()) and float(s[0]) > float(first_ts), 15, "a newer frame in the live tile")
    state = wait_for(lambda: js(page, "const m = document.querySelector('.tile[data-camera=\"demo\"] .meta');"
                                      "return m && m.textContent.includes('running') && m.textContent"), 15, "camera health")
    assert "fps" in state and "dropped" in state
    page.save_screenshot(str(ARTIFACTS / "live-first.png"))


def test_queries_page_when_a_query_is_added_through_the_form_then_it_is_listed(page, stack):
    page.find_element("id", "tab-queries").click()
    wait_for(lambda: js(page, "return document.querySelectorAll('#query-table tbody tr').length") >= len(DEMO_QUERIES), 15,
             "the demo queries listed")
    page.find_element("id", "q-id").send_keys("ui-blue-up")
    page.find_element("id", "q-text").send_keys("the blue square moving up")
    field = page.find_element("id", "q-cameras")
    field.clear()
    field.send_keys("demo")
    page.find_element("id", "q-submit").click()
    row = wait_for(lambda: js(page, "const r = document.querySelector('tr[data-query-id=\"ui-blue-up\"]'); return r && r.textContent"),
                   10, "the new query's row")
    assert "the blue square moving up" in row and "demo" in row
    assert stack.get("/v1/queries/ui-blue-up").json()["cameras"] == ["demo"]


def test_queries_page_when_a_bad_query_is_submitted_then_the_field_shows_the_error(page, stack):
    page.find_element("id", "tab-queries").click()
    page.find_element("id", "q-text").send_keys("the red circle")
    page.find_element("id", "q-threshold").send_keys("2")
    page.find_element("id", "q-submit").click()
    error = wait_for(lambda: js(page, "return document.querySelector('.error[data-for=\"threshold\"]').textContent"), 10,
                     "the threshold error")
    assert "[0, 1" in error
    assert "invalid" in page.find_element("id", "q-threshold").get_attribute("class")
    assert js(page, "return document.querySelector('.error[data-for=\"text\"]').textContent") == ""
    page.save_screenshot(str(ARTIFACTS / "queries.png"))
    assert len(stack.get("/v1/queries").json()) == len(DEMO_QUERIES) + 1  # nothing was added


def test_events_page_when_the_demo_runs_then_an_event_is_listed_with_its_snapshot(page):
    page.find_element("id", "tab-events").click()
    # the demo's first event: the first window is 8 s after start, the red circle is in it (CPU model: allow 90 s)
    wait_for(lambda: js(page, "return [...document.querySelectorAll('#event-list li.event img')]"
                              ".some(i => i.complete && i.naturalWidth > 0)"), 90, "an event with a loaded snapshot")
    info = js(page, "return document.querySelector('#event-list li.event .info').textContent")
    assert "demo" in info and "score" in info


def test_events_page_when_an_ended_event_is_clicked_then_its_clip_plays(page, stack):
    # given an ended event whose clip was made (the demo's objects leave the scene within each 10 s episode)
    def ended_with_clip():
        for e in stack.get("/v1/events", type="end", limit=50).json()["events"]:
            r = stack.get(f"/v1/events/{e['event_id']}/media")
            if r.status_code == 200 and (r.json().get("clip") or {}).get("state") == "ok":
                return e, r.json()["clip"]
        return None

    event, clip = wait_for(ended_with_clip, 120, "an ended event with its clip", step_s=1.0)
    page.find_element("id", "tab-events").click()
    selector = f'#event-list li.event[data-event-id="{event["event_id"]}"]'
    wait_for(lambda: js(page, f"return document.querySelector('{selector}') !== null"), 20, "the ended event in the list")
    # when it is clicked
    js(page, f"document.querySelector('{selector}').scrollIntoView()")
    page.find_element("css selector", selector).click()
    # then the video loads (readyState >= 2: current data) and lasts the clip's span, padding included
    ready = wait_for(lambda: js(page, "const v = document.getElementById('player-video');"
                                      "return v.readyState >= 2 && v.duration > 0 ? [v.readyState, v.duration] : null"),
                     20, "the clip to load in <video>")
    span = clip["end_ts"] - clip["start_ts"]
    assert abs(span - (event["end_ts"] - event["start_ts"] + 2.0)) < 0.01  # pre_s + post_s = 2 s
    assert abs(ready[1] - span) <= 0.1 * span, (ready, span)
    wait_for(lambda: js(page, "return document.getElementById('player-video').currentTime > 0"), 10, "the clip playing")
    page.save_screenshot(str(ARTIFACTS / "events.png"))


def test_live_page_when_an_event_is_open_then_its_box_is_drawn_over_the_tile(page, stack):
    # given events on the feed (the earlier tests waited for them), while one is open
    page.find_element("id", "tab-live").click()
    # then the SSE feed draws its box over the demo tile (the demo's objects are on screen most of each episode)
    rect = wait_for(lambda: js(page, "const r = document.querySelector('.tile[data-camera=\"demo\"] svg rect');"
                                     "return r && [r.dataset.eventId, +r.getAttribute('width'), +r.getAttribute('height')]"),
                    30, "a box over the live tile")
    assert rect[1] > 0 and rect[2] > 0
    assert stack.get(f"/v1/events/{rect[0]}").status_code == 200
    time.sleep(1.0)  # the next preview under it
    page.save_screenshot(str(ARTIFACTS / "live.png"))


def test_queries_page_when_a_query_is_edited_then_every_field_is_kept_and_secrets_are_left_alone(page, stack):
    import redis

    from engine.contracts.queries import QueryRegistry

    # given a query with a min duration and a webhook (its secret is write-only: the page never sees it)
    sink = {"url": "http://127.0.0.1:9/hook", "secret": "hook-secret-1"}
    r = httpx.post(stack.url + "/v1/queries", headers={"Authorization": f"Bearer {stack.token}"}, timeout=10,
                   json={"id": "ui-hooks", "text": "the red circle", "cameras": ["demo"], "threshold": 0.4,
                         "min_duration_s": 2.5, "cooldown_s": 3.0, "webhooks": [sink]})
    assert r.status_code == 201, r.text
    client = redis.Redis.from_url(stack.cfg.redis.url)
    stored = lambda: QueryRegistry(client, stack.cfg.redis.keys()).get("ui-hooks")  # noqa: E731
    try:
        page.find_element("id", "tab-queries").click()
        edit = 'tr[data-query-id="ui-hooks"] button.edit'
        wait_for(lambda: js(page, f"return document.querySelector('{edit}') !== null"), 15, "the query's row")
        # when it is edited through the form (only its text changed)
        js(page, f"document.querySelector('{edit}').click()")
        form = js(page, "return [document.getElementById('q-min-duration').value, document.getElementById('q-cooldown').value,"
                        " document.getElementById('q-threshold').value,"
                        " [...document.querySelectorAll('#q-webhooks .sink-url')].map(i => i.value)]")
        assert form == ["2.5", "3", "0.4", [sink["url"]]]
        text = page.find_element("id", "q-text")
        text.clear()
        text.send_keys("the red circle moving left")
        page.find_element("id", "q-submit").click()
        wait_for(lambda: stored().text == "the red circle moving left", 10, "the edited query stored")
        # then nothing else changed: the webhook kept its secret, the min duration, cooldown and threshold theirs
        q = stored()
        assert [(w.url, w.secret) for w in q.webhooks] == [(sink["url"], sink["secret"])]
        assert (q.min_duration_s, q.cooldown_s, q.threshold, q.cameras) == (2.5, 3.0, 0.4, ("demo",))
        # when a second webhook is added without its secret, then the page shows why it is refused, and nothing changes
        js(page, f"document.querySelector('{edit}').click()")
        page.find_element("id", "q-add-webhook").click()
        page.find_elements("css selector", "#q-webhooks .sink-url")[-1].send_keys("http://127.0.0.1:9/other")
        page.find_element("id", "q-submit").click()
        error = wait_for(lambda: js(page, "return document.querySelector('.error[data-for=\"webhooks\"]').textContent"), 10,
                         "the webhooks error")
        assert "needs its secret" in error
        assert [w.url for w in stored().webhooks] == [sink["url"]]
        # when it is typed, then both are stored, the first still with its own secret
        page.find_elements("css selector", "#q-webhooks .sink-secret")[-1].send_keys("hook-secret-2")
        page.find_element("id", "q-submit").click()
        wait_for(lambda: len(stored().webhooks) == 2, 10, "the second webhook stored")
        assert [(w.url, w.secret) for w in stored().webhooks] == [(sink["url"], "hook-secret-1"),
                                                                  ("http://127.0.0.1:9/other", "hook-secret-2")]
    finally:
        client.close()
