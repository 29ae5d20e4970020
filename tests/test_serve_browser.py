"""The search page in a real headless browser (Debian's chromium + chromedriver, via selenium),
over a gallery store holding crops of a video: the query image beside its ranked crops with
camera and UTC time; a click on a crop shows the video frame with the box drawn where the
crop was cut; the timeline has a dot per sighting within the threshold; the owner's token
taken from the start-up link and used for an add, and no add without it.  Skipped, with the
reason, when the browser, its driver or selenium is not installed (.ci/run installs them)."""

import datetime
import os
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the web app needs the serve extra: pip install -e '.[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "no chromium/chromedriver on this machine: apt-get install -y chromium chromium-driver", allow_module_level=True
    )

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from serve_helpers import FRAME_SIZE, build_gallery, build_store

from reid_srdl.evaluation import colours
from reid_srdl.search import ReIDSearcher
from reid_srdl.serve.app import create_app
from reid_srdl.serve.guard import AccessPolicy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN = "browser-owner-token-0123456789"


@pytest.fixture
def server(tiny_market_root, tmp_path):
    gallery = build_gallery(tiny_market_root, tmp_path)
    store = str(tmp_path / "store")
    footage = build_store(gallery, store)
    searcher = ReIDSearcher.load(store=store, model=gallery["model"])
    port = free_port()
    roots = [store, os.path.dirname(footage["video"]), os.path.dirname(gallery["paths"][0])]
    access = AccessPolicy.for_server("127.0.0.1", port, TOKEN)
    upload_dir = os.path.join(searcher.store.crop_dir, "uploads")
    app = create_app(searcher, None, upload_dir, access=access, image_roots=roots)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield {
        "url": f"http://127.0.0.1:{port}/",
        "service": app.state.service,
        "searcher": searcher,
        "footage": footage,
        "queries": gallery["queries"],
        "images": len(footage["items"]),
        "profile": str(tmp_path / "chrome"),
    }
    srv.should_exit = True
    thread.join(timeout=10)
    searcher.close()


@pytest.fixture
def driver(server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={server['profile']}",
    ):
        options.add_argument(flag)
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield d
    d.quit()


def loaded(driver, images) -> bool:
    """Every image decoded (naturalWidth > 0): it really came from the server."""
    return all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in images
    )


def utc(ts: float) -> str:
    """As the page writes a time: "2024-05-01 14:02:11 UTC"."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.mark.slow
def test_search_the_footage_see_where_and_when_and_add_as_the_owner(server, driver):
    # The owner opens the link printed at start-up; the token leaves the address bar at once.
    driver.get(server["url"] + "?token=" + TOKEN)
    wait = WebDriverWait(driver, 30)
    n = server["images"]
    wait.until(EC.text_to_be_present_in_element((By.ID, "stats"), f"{n} images"))
    assert driver.current_url == server["url"] and driver.execute_script("return document.referrer") == ""
    assert driver.execute_script("return sessionStorage.getItem('reid_srdl_token')") == TOKEN
    assert driver.find_element(By.ID, "add_form").is_displayed()

    # A crop of the video as the query, with a threshold that admits the four video crops.
    s = server["searcher"]
    video_items = server["footage"]["video_items"]
    query = video_items[1].crop
    everything = s.search(query, k=n)[0]
    video_ids = {it.id for it in video_items}
    tau = float(max(d for i, d in zip(everything.indices, everything.distances) if i in video_ids)) + 1e-4
    expected = s.search(query, k=4, threshold=tau)[0]
    within = [i for i, d in zip(everything.indices, everything.distances) if d <= tau]
    driver.find_element(By.ID, "k").clear()
    driver.find_element(By.ID, "k").send_keys("4")
    driver.find_element(By.ID, "threshold").clear()
    driver.find_element(By.ID, "threshold").send_keys(repr(tau))
    driver.find_element(By.ID, "file").send_keys(os.path.abspath(query))  # triggers the search
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure")) == 4)
    decision = driver.find_element(By.ID, "decision").text
    assert decision.startswith(expected.decision + " (") and f"{tau:.3f}" in decision

    # The query image itself beside its results.
    shown = driver.find_element(By.ID, "query_img")
    wait.until(lambda d: loaded(d, [shown]))
    assert shown.get_attribute("src").startswith("blob:") and driver.find_element(By.ID, "query").is_displayed()
    # Each hit: its crop, its camera and its time (UTC), in rank order.
    figures = driver.find_elements(By.CSS_SELECTOR, "#results figure")
    assert [f.get_attribute("data-id") for f in figures] == [str(i) for i in expected.indices]
    for fig, item, dist in zip(figures, expected.items, expected.distances):
        assert fig.find_element(By.CSS_SELECTOR, ".rank").text == f"#{figures.index(fig) + 1} d={dist:.3f}"
        assert fig.find_element(By.CSS_SELECTOR, ".cam").text == item.camera
        times = fig.find_elements(By.CSS_SELECTOR, ".time")
        assert [t.text for t in times] == ([] if item.timestamp is None else [utc(item.timestamp)])
    images = driver.find_elements(By.CSS_SELECTOR, "#results img")
    wait.until(lambda d: loaded(d, images))
    assert "within" in figures[0].get_attribute("class")

    # A click on the first crop shows its frame with the box where the crop was cut.
    first = expected.items[0]
    assert first.frame >= 0
    images[0].click()
    wait.until(lambda d: d.find_element(By.ID, "frame_view").is_displayed())
    frame = driver.find_element(By.ID, "frame_img")
    wait.until(lambda d: loaded(d, [frame]) and d.find_elements(By.ID, "frame_box"))
    size = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", frame)
    assert tuple(size) == FRAME_SIZE
    box = driver.find_element(By.ID, "frame_box")
    assert [int(float(box.get_attribute(a))) for a in ("x", "y", "width", "height")] == list(first.box)
    assert box.get_attribute("stroke") == colours.WITHIN
    caption = driver.find_element(By.ID, "frame_caption").text
    assert caption.startswith(f"{first.camera}, {utc(first.timestamp)}, frame {first.frame}, cam.avi")
    # The box lies over the frame as drawn: its rectangle on screen is the box scaled to the image.
    img_rect, box_rect = (driver.execute_script("return arguments[0].getBoundingClientRect()", e) for e in (frame, box))
    scale = img_rect["width"] / FRAME_SIZE[0]
    assert abs(box_rect["x"] - img_rect["x"] - first.box[0] * scale) < 3
    assert abs(box_rect["width"] - first.box[2] * scale) < 4

    # The timeline: a dot per sighting within the threshold, on its camera's row, at its time.
    dots = driver.find_elements(By.CSS_SELECTOR, "#timeline circle.sighting")
    timed = [i for i in within if s.store.get([i])[0].timestamp is not None]
    assert sorted(int(d.get_attribute("data-id")) for d in dots) == sorted(timed)
    for d in dots:
        item = s.store.get([int(d.get_attribute("data-id"))])[0]
        assert d.get_attribute("data-camera") == item.camera
        assert float(d.get_attribute("data-timestamp")) == item.timestamp
    rows = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#timeline text.camera")]
    assert rows == sorted({s.store.get([i])[0].camera for i in timed})
    xs = {int(d.get_attribute("data-id")): float(d.get_attribute("cx")) for d in dots}
    by_time = sorted(timed, key=lambda i: s.store.get([i])[0].timestamp)
    assert [xs[i] for i in by_time] == sorted(xs.values())  # later is further right

    # A time window and the cameras to keep: the hits are the unfiltered ranking's first k that
    # pass the filter, checked by hand here (the window's bounds lie between crops' times).
    stamps = sorted({it.timestamp for it in video_items})
    t_from, t_to = (stamps[0] + stamps[1]) / 2, (stamps[2] + stamps[3]) / 2
    keep = sorted({it.camera for it in video_items})[:1]
    iso = {t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat() for t in (t_from, t_to)}

    def admitted(item):
        return item.camera in keep and item.timestamp is not None and t_from <= item.timestamp <= t_to

    by_hand = [i for i in everything.indices if admitted(s.store.get([int(i)])[0])][:4]
    assert by_hand and by_hand != list(expected.indices)[: len(by_hand)]  # the filter changes the answer
    for field, value in (("cameras", ",".join(keep)), ("time_from", iso[t_from]), ("time_to", iso[t_to])):
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.ID, "search").click()
    redrawn = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))  # results re-render
    redrawn.until(
        lambda d: (
            [f.get_attribute("data-id") for f in d.find_elements(By.CSS_SELECTOR, "#results figure")]
            == [str(i) for i in by_hand]
        )
    )
    for fig in driver.find_elements(By.CSS_SELECTOR, "#results figure"):
        assert fig.find_element(By.CSS_SELECTOR, ".cam").text in keep
    # A time that is not ISO 8601 is one line from the server, shown where the decision goes.
    driver.find_element(By.ID, "time_to").clear()
    driver.find_element(By.ID, "time_to").send_keys("yesterday")
    driver.find_element(By.ID, "search").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "decision"), "error: time_to: 'yesterday' is not an ISO 8601"))
    assert driver.find_elements(By.CSS_SELECTOR, "#results figure") == []
    for field in ("cameras", "time_from", "time_to"):
        driver.find_element(By.ID, field).clear()

    # An add through the page (the token goes as a header): the gallery grows by one.
    driver.find_element(By.ID, "add_files").send_keys(os.path.abspath(server["queries"][5]))
    driver.find_element(By.ID, "add_cameras").send_keys("lobby")
    driver.find_element(By.ID, "add_button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "add_result"), f"added 1; {n + 1} images"))
    assert len(server["service"].searcher) == n + 1
    hit = s.search(server["queries"][5], k=1)[0]
    assert hit.items[0].camera == "lobby" and hit.distances[0] < 1e-3


@pytest.mark.slow
def test_without_the_token_the_page_cannot_add(server, driver):
    driver.get(server["url"])
    wait = WebDriverWait(driver, 30)
    wait.until(EC.text_to_be_present_in_element((By.ID, "add_note"), "adding needs the owner's token"))
    assert not driver.find_element(By.ID, "add_form").is_displayed()
    # Even a script on the page that tries without it is refused by the server.
    status = driver.execute_async_script(
        "const done = arguments[0]; const f = new FormData();"
        "f.append('files', new Blob([new Uint8Array([1, 2, 3])]), 'x.png');"
        "fetch('/gallery', {method: 'POST', body: f}).then(r => done(r.status));"
    )
    assert status == 401 and len(server["service"].searcher) == server["images"]
