#!/usr/bin/env python
"""The real-footage demo's picture and its check (docs/footage_demo.md).

    python experiments/footage_demo.py picture --video vtest.avi --frames 300 600 --out docs/footage_motion.jpg
    python experiments/footage_demo.py check --store vtest_gallery --model runs/RUN --out footage_check/

``picture`` runs the motion detector over the video (as ``ingest --detect motion`` does) and
draws its boxes on the given frames, side by side at half size.

``check`` prepares a blind hand check of the search in a gallery made by
``ingest --detect motion --every 1`` of one fixed camera (motion boxes jitter and merge too
much to link them into reliable tracks, so no automatic "ground truth" is made from them):

* queries: ``--query FRAME:X`` (the crop of that frame whose box starts at column X, picked
  by hand: one whole person in clothes a judge can tell from the others'); without them, the
  largest crop at least twice as tall as wide of frames 50, 100, ... 750 (the judge skips a
  query that is not one whole person, and says so);
* for each query, its 5 nearest crops **at least 3 s away** (the neighbouring frames of the
  same walk are trivially alike), by three embeddings of the same crops: the trained network
  (the vectors in the store), the same architecture with fresh random weights, and a colour
  histogram (HSV, 8 x 8 hue-saturation bins per upper and lower half, square-rooted: a classic
  non-learned re-id baseline);
* one contact sheet per query (``sheet_*.png``): the query, then one row per embedding in a
  random order labelled A, B, C, so the judge does not know which row is which; the key is in
  ``check.json``, to be read after judging.

Results go to ``--out`` (``check.json`` and the sheets).

``screenshot`` serves the store with tools/serve.py on a free loopback port, opens the page in
headless chromium (selenium; 1400 px wide), searches the gallery crop ``--pick FRAME:X`` as
"search this person" does (``--threshold`` typed in when given), opens the frame of the first
hit at least 3 s from the query (else of the first hit), and saves the whole page:

    python experiments/footage_demo.py screenshot --store vtest_gallery --model runs/RUN --pick 660:616 \
        --threshold 2.5 --image-root vtest_gallery --image-root /usr/share/doc/opencv-doc/examples/data \
        --out docs/footage_search.jpg

``table`` joins ``check.json`` with the judge's verdicts (``--judgments``: per sheet, per row
letter, 1 / 0 / null for unsure per hit), prints the table of docs/footage_demo.md and writes
the compact record of the study (``experiments/results/footage_demo.json``: machine, commit,
the queries, every hit, the key and the verdicts).

    python experiments/footage_demo.py table --check footage_check/check.json \
        --judgments judgments.json --out experiments/results/footage_demo.json
"""

import argparse
import copy
import json
import os
import sys

import numpy as np

GAP_S = 3.0  # hits closer in time than this to the query are left out (the same walk, trivially alike)
SHEET_FRAMES = tuple(range(50, 751, 50))
SHEET_HITS = 5


def colour_histograms(paths) -> np.ndarray:
    import cv2

    out = []
    for p in paths:
        hsv = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2HSV)
        halves = (hsv[: hsv.shape[0] // 2], hsv[hsv.shape[0] // 2 :])
        h = [cv2.calcHist([x], [0, 1], None, [8, 8], [0, 180, 0, 256]).ravel() for x in halves]
        v = np.concatenate([x / max(x.sum(), 1.0) for x in h])
        out.append(np.sqrt(v))
    return np.asarray(out, np.float32)


def untrained_features(model_path, paths) -> np.ndarray:
    import torch

    from reid_srdl.models.model_file import load_model_file
    from reid_srdl.search.embedder import Embedder

    net, meta = load_model_file(model_path)
    fresh = copy.deepcopy(net)
    torch.manual_seed(0)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    e = Embedder(fresh, height=int(meta.get("height") or 256), width=int(meta.get("width") or 128), batch_size=128)
    feats, _ = e.embed_files(paths)
    return feats


def distances(feats: np.ndarray) -> np.ndarray:
    sq = (feats**2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * feats @ feats.T, 0))


def contact_sheet(path, rows, paths, times, query, height=128):
    import cv2

    def tile(p, label, colour=(255, 255, 255)):
        img = cv2.imread(p)
        img = cv2.resize(img, (max(1, round(img.shape[1] * height / img.shape[0])), height))
        img = cv2.copyMakeBorder(img, 0, 18, 2, 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        cv2.putText(img, label, (3, height + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
        return img

    lines = []
    for name, hits in rows:
        tiles = [tile(paths[query], f"query, row {name}", (0, 255, 255))]
        tiles += [tile(paths[h], f"{times[h] - times[query]:+.1f}s") for h in hits]
        lines.append(np.concatenate(_same_height(tiles), 1))
    width = max(x.shape[1] for x in lines)
    sheet = np.concatenate(
        [cv2.copyMakeBorder(x, 0, 4, 0, width - x.shape[1], cv2.BORDER_CONSTANT, value=(40, 40, 40)) for x in lines]
    )
    cv2.imwrite(path, sheet)


def _same_height(tiles):
    import cv2

    h = max(t.shape[0] for t in tiles)
    return [cv2.copyMakeBorder(t, 0, h - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]


def _queries(items, picked):
    """``(frame, item index)`` of the queries (see the module docstring)."""
    if picked:
        for text in picked:
            frame, x = (int(v) for v in text.split(":"))
            found = [i for i, it in enumerate(items) if it.frame == frame and it.box[0] == x]
            if len(found) != 1:
                raise SystemExit(f"--query {text}: no crop of frame {frame} starts at column {x}")
            yield frame, found[0]
        return
    for frame in SHEET_FRAMES:
        here = [i for i, it in enumerate(items) if it.frame == frame]
        if here:
            # The largest crop at least twice as tall as wide (a pair side by side is wider).
            slim = [i for i in here if items[i].box[3] >= 2 * items[i].box[2]] or here
            yield frame, max(slim, key=lambda i: items[i].box[2] * items[i].box[3])


def cmd_check(args) -> None:
    import random

    from reid_srdl.search.ingest.pipeline import crop_file
    from reid_srdl.search.stores import open_store

    store = open_store(args.store)
    vectors, items = [], []
    for v, it in store.scan():
        vectors.append(v)
        items.extend(it)
    store.close()
    vectors = np.concatenate(vectors)
    paths = [crop_file(store, it.crop) for it in items]
    times = np.array([it.timestamp if it.timestamp is not None else it.frame / 10.0 for it in items])
    embeddings = {
        "trained": vectors,
        "untrained": untrained_features(args.model, paths),
        "colour histogram": colour_histograms(paths),
    }
    dists = {name: distances(f.astype(np.float64)) for name, f in embeddings.items()}
    os.makedirs(args.out, exist_ok=True)
    shuffle = random.Random(0)
    sheets = []
    for frame, q in _queries(items, args.query):
        cand = np.flatnonzero(np.abs(times - times[q]) >= GAP_S)
        names = list(dists)
        shuffle.shuffle(names)
        rows = []
        for letter, name in zip("ABC", names):
            hits = cand[np.argsort(dists[name][q][cand], kind="stable")][:SHEET_HITS]
            rows.append((letter, [int(h) for h in hits]))
        sheet = os.path.join(args.out, f"sheet_{frame:04d}_{items[q].box[0]:03d}.png")
        contact_sheet(sheet, rows, paths, times, q)
        sheets.append(
            {
                "frame": frame,
                "query_box": list(items[q].box),
                "sheet": sheet,
                "key": dict(zip("ABC", names)),
                "hits": {
                    name: [{"frame": items[h].frame, "box": list(items[h].box)} for h in hits]
                    for name, (_, hits) in zip(names, rows)
                },
            }
        )
    with open(os.path.join(args.out, "check.json"), "w") as f:
        json.dump(
            {"store": args.store, "model": args.model, "items": len(items), "gap_s": GAP_S, "sheets": sheets},
            f,
            indent=2,
        )
    print(
        f"{len(items)} crops; {len(sheets)} contact sheets to judge blind: {args.out}/sheet_*.png (key in check.json)"
    )


def cmd_table(args) -> None:
    from reid_srdl.core.environment import machine_metadata

    with open(args.check) as f:
        check = json.load(f)
    with open(args.judgments) as f:
        verdicts = json.load(f)
    totals = {}
    queries = []
    for sheet in check["sheets"]:
        rows = verdicts[str(sheet["frame"])]
        per_method = {}
        for letter, method in sheet["key"].items():
            marks = rows[letter]
            if len(marks) != len(sheet["hits"][method]):
                n = len(sheet["hits"][method])
                raise SystemExit(f"sheet of frame {sheet['frame']} row {letter}: {len(marks)} verdicts for {n} hits")
            per_method[method] = marks
            t = totals.setdefault(method, {"same": 0, "unsure": 0, "hits": 0, "top1": 0, "queries": 0})
            t["same"] += sum(1 for m in marks if m == 1)
            t["unsure"] += sum(1 for m in marks if m is None)
            t["hits"] += len(marks)
            t["top1"] += int(marks[0] == 1)
            t["queries"] += 1
        queries.append({**sheet, "verdicts": per_method})
    record = {
        "study": "footage_demo",
        "question": "does a network trained on synthetic renders find the same real person again (vtest.avi)?",
        "machine": machine_metadata(),
        "store": check["store"],
        "model": check["model"],
        "items": check["items"],
        "gap_s": check["gap_s"],
        "queries": queries,
        "totals": totals,
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    for method, t in totals.items():
        unsure = f" (+{t['unsure']} unsure)" if t["unsure"] else ""
        print(f"{method:>17}: same person {t['same']}/{t['hits']}{unsure}, top hit {t['top1']}/{t['queries']}")
    print(f"wrote {args.out}")


def cmd_picture(args) -> None:
    import cv2

    from reid_srdl.search.ingest import MotionOptions, VideoSource
    from reid_srdl.search.ingest.motion import MotionDetector

    v = VideoSource(args.video)
    detector = MotionDetector(v.width, v.height, MotionOptions())
    wanted, panels = set(args.frames), {}
    for index, frame in v.frames():
        boxes = detector.detect(frame)
        if index in wanted:
            img = frame.copy()
            for (x, y, w, h), _ in boxes:
                cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), 2)
            cv2.putText(img, f"frame {index}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
            panels[index] = cv2.resize(img, (v.width // 2, v.height // 2), interpolation=cv2.INTER_AREA)
        if index >= max(wanted):
            break
    out = np.concatenate([panels[f] for f in args.frames], 1)
    cv2.imwrite(args.out, out, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _picked_item(store_path, text):
    """The gallery item ``FRAME:X`` (the crop of that frame whose box starts at column X)."""
    from reid_srdl.search.stores import open_store

    frame, x = (int(v) for v in text.split(":"))
    store = open_store(store_path)
    try:
        found = [it for _, items in store.scan() for it in items if it.frame == frame and it.box and it.box[0] == x]
    finally:
        store.close()
    if len(found) != 1:
        raise SystemExit(f"--pick {text}: no single crop of frame {frame} starts at column {x} in {store_path}")
    return found[0]


def _browser(width, height):
    import shutil

    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs chromium and its driver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def cmd_screenshot(args) -> None:
    """Serve the store with tools/serve.py, search the picked gallery item in the page (as a
    user does with "search this person"), open the frame of one hit, and save the picture."""
    import io
    import subprocess
    import time

    import httpx
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    item = _picked_item(args.store, args.pick)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    serve = [sys.executable, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
             "serve.py"), "--store", args.store, "--model", args.model, "--port", str(port)]  # fmt: skip
    for root in args.image_root:
        serve += ["--image-root", root]
    server = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise SystemExit(f"tools/serve.py did not start:\n{server.communicate()[0][-2000:]}")
            time.sleep(0.3)
        driver = _browser(args.width, args.height)
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        wait.until(lambda d: "images" in d.find_element(By.ID, "stats").text)
        k = driver.find_element(By.ID, "k")
        k.clear()
        k.send_keys(str(args.k))
        if args.threshold is not None:
            field = driver.find_element(By.ID, "threshold")
            field.clear()
            field.send_keys(repr(args.threshold))
        driver.find_element(By.ID, "gallery_id").send_keys(str(item.id))
        driver.find_element(By.ID, "pick").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure")) == args.k)
        images = driver.find_elements(By.CSS_SELECTOR, "#results img") + [driver.find_element(By.ID, "query_img")]
        decoded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
        wait.until(lambda d: all(d.execute_script(decoded, im) for im in images))
        hits = driver.find_elements(By.CSS_SELECTOR, "#results figure")
        # The frame of the first hit at least GAP_S away from the query (nearer ones are the
        # same few steps), else of the first hit.
        times = [h.find_element(By.CSS_SELECTOR, ".time").text for h in hits]
        query_time = _utc_text(item.timestamp)
        far = [i for i, t in enumerate(times) if abs(_seconds(t) - _seconds(query_time)) >= GAP_S]
        chosen = far[0] if far else 0
        hits[chosen].find_element(By.TAG_NAME, "img").click()
        frame = driver.find_element(By.ID, "frame_img")
        wait.until(lambda d: d.execute_script(decoded, frame) and d.find_elements(By.ID, "frame_box"))
        # The page is taller than the window once the frame is open: the window grows to it.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, min(height + 40, 3000))
        png = driver.get_screenshot_as_png()
        caption = driver.find_element(By.ID, "frame_caption").text
        decision = driver.find_element(By.ID, "decision").text
        timeline = driver.find_element(By.ID, "timeline_note").text
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    if args.out.lower().endswith((".jpg", ".jpeg")):
        shot.save(args.out, quality=args.quality, optimize=True)
    else:
        shot.save(args.out, optimize=True)
    print(f"query: gallery item {item.id} (frame {item.frame}, box {','.join(map(str, item.box))})")
    print(f"decision: {decision}")
    print(f"hits: {'; '.join(times)}")
    print(f"timeline: {timeline}")
    print(f"frame open: hit #{chosen + 1}, {caption}")
    print(f"wrote {args.out} ({shot.width}x{shot.height}, {os.path.getsize(args.out) // 1024} KB)")


def _utc_text(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(text: str) -> float:
    """Seconds since the epoch of a time as the page writes it ("2024-05-01 14:02:11 UTC")."""
    import datetime

    t = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("picture")
    a.add_argument("--video", required=True)
    a.add_argument("--frames", type=int, nargs="+", default=[300, 600])
    a.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--store", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--query", action="append", metavar="FRAME:X", help="a hand-picked query crop (repeat)")
    t = sub.add_parser("table")
    t.add_argument("--check", required=True, metavar="check.json")
    t.add_argument("--judgments", required=True, metavar="JUDGMENTS.json")
    t.add_argument("--out", required=True)
    w = sub.add_parser("screenshot")
    w.add_argument("--store", required=True)
    w.add_argument("--model", required=True)
    w.add_argument("--pick", required=True, metavar="FRAME:X", help="the gallery crop searched in the page")
    w.add_argument("--image-root", action="append", default=[], metavar="DIR", help="passed to tools/serve.py")
    w.add_argument("--k", type=int, default=10)
    w.add_argument("--threshold", type=float, help="typed into the page (default: the page's own, calibrated or none)")
    w.add_argument("--width", type=int, default=1400)
    w.add_argument("--height", type=int, default=1000)
    w.add_argument("--quality", type=int, default=80, help="JPEG quality, for an --out *.jpg")
    w.add_argument("--out", required=True, help="*.png or *.jpg")
    args = p.parse_args(argv)
    commands = {"picture": cmd_picture, "check": cmd_check, "table": cmd_table, "screenshot": cmd_screenshot}
    commands[args.command](args)


if __name__ == "__main__":
    main()
