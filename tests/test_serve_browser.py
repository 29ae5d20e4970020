"""The search page in a real headless browser (Debian's chromium + chromedriver, via selenium):
upload a query image, see it beside the ranked crops and the decision; the owner's token taken from
the start-up link and used for an add, and no add without it.  Skipped, with the reason, when
the browser, its driver or selenium is not installed (.ci/run installs them)."""

import os
import shutil
import socket
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the web app needs the serve extra: pip install -e '.[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "no chromium/chromedriver on this machine: apt-get install -y chromium chromium-driver", allow_module_level=True
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from reid_srdl.core.checkpoint import save_model_file  # noqa: E402
from reid_srdl.models import build_model  # noqa: E402
from reid_srdl.search import ReIDSearcher  # noqa: E402
from reid_srdl.search.labels import list_images, market_labels  # noqa: E402
from reid_srdl.serve.app import create_app  # noqa: E402
from reid_srdl.serve.guard import AccessPolicy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN = "browser-owner-token-0123456789"


@pytest.fixture
def server(tiny_market_root, tmp_path):
    market = os.path.join(tiny_market_root, "market1501", "Market-1501-v15.09.15")
    torch.manual_seed(0)
    net = build_model("small_reid", 4, feature_dim=8).eval()
    model = str(tmp_path / "final.pt")
    save_model_file(net, model, task="reid", height=32, width=16)
    paths = list_images(os.path.join(market, "bounding_box_test"))
    s = ReIDSearcher.from_images(model, paths, *market_labels(paths))
    queries = list_images(os.path.join(market, "query"))
    s.calibrate(queries, *market_labels(queries), far=0.2)
    port = free_port()
    roots = [os.path.join(market, "bounding_box_test"), str(tmp_path / "uploads")]
    access = AccessPolicy.for_server("127.0.0.1", port, TOKEN)
    app = create_app(s, None, str(tmp_path / "uploads"), access=access, image_roots=roots)
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
        "searcher": s,
        "query": queries[0],
        "queries": queries,
        "profile": str(tmp_path / "chrome"),
    }
    srv.should_exit = True
    thread.join(timeout=10)


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


@pytest.mark.slow
def test_search_from_the_page_and_add_as_the_owner(server, driver):
    # The owner opens the link printed at start-up; the token leaves the address bar at once.
    driver.get(server["url"] + "?token=" + TOKEN)
    wait = WebDriverWait(driver, 30)
    wait.until(EC.text_to_be_present_in_element((By.ID, "stats"), "36 images"))
    assert driver.current_url == server["url"] and driver.execute_script("return document.referrer") == ""
    assert driver.execute_script("return sessionStorage.getItem('reid_srdl_token')") == TOKEN
    assert driver.find_element(By.ID, "add_form").is_displayed()

    driver.find_element(By.ID, "k").clear()
    driver.find_element(By.ID, "k").send_keys("4")
    driver.find_element(By.ID, "file").send_keys(os.path.abspath(server["query"]))  # triggers the search
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure")) == 4)
    expected = server["searcher"].search(server["query"], k=4, threshold="calibrated")[0]
    decision = driver.find_element(By.ID, "decision").text
    assert decision.startswith(expected.decision + " (") and f"{expected.threshold:.3f}" in decision
    captions = [f.text for f in driver.find_elements(By.CSS_SELECTOR, "#results figcaption")]
    assert [c.split()[0] for c in captions] == ["#1", "#2", "#3", "#4"]
    for caption, dist in zip(captions, expected.distances):
        assert f"d={dist:.3f}" in caption
    images = driver.find_elements(By.CSS_SELECTOR, "#results img")
    wait.until(lambda d: loaded(d, images))
    assert [im.get_attribute("src").rsplit("/", 1)[-1] for im in images] == [str(i) for i in expected.indices]
    # The query image itself is shown beside its results.
    query = driver.find_element(By.ID, "query_img")
    wait.until(lambda d: loaded(d, [query]))
    assert query.get_attribute("src").startswith("blob:") and driver.find_element(By.ID, "query").is_displayed()

    # An add through the page (the token goes as a header): the gallery grows by one.
    driver.find_element(By.ID, "add_files").send_keys(os.path.abspath(server["queries"][5]))
    driver.find_element(By.ID, "add_cameras").send_keys("c3")
    driver.find_element(By.ID, "add_button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "add_result"), "added 1; 37 images"))
    assert len(server["service"].searcher) == 37 and server["service"].searcher.camids[-1] == 2


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
    assert status == 401 and len(server["service"].searcher) == 36
