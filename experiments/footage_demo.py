#!/usr/bin/env python
"""The real-footage demo's picture and its check (docs/footage_demo.md).

    python experiments/footage_demo.py picture --video vtest.avi --frames 300 600 --out docs/footage_motion.jpg
    python experiments/footage_demo.py check --store vtest_gallery --model runs/RUN --out footage_check/

``picture`` runs the motion detector over the video (as ``ingest --detect motion`` does) and
draws its boxes on the given frames, side by side at half size.

``check`` asks how well the network finds the same person again in a gallery made by
``ingest --detect motion --every 1`` of one fixed camera:

* it links the gallery's boxes into *tracklets* (a box continues the tracklet of the box in
  the previous frame it overlaps most, IoU >= 0.5, if their areas are within a factor 1.5 --
  so a merge or split of two people starts new tracklets instead of joining them);
* every 10th crop of a tracklet spanning at least 6 s is a query; its positives are the crops
  of its tracklet at least 3 s away (another moment of the same walk: another pose, place and
  size), its crops closer than 3 s are left out (trivially alike), every other crop is a
  negative -- also the same person's crops in another tracklet, so the figures are a lower
  bound of the true ones;
* Rank-1 and mAP for three embeddings of the same crops: the trained network (the vectors
  in the store), the same architecture with fresh random weights, and a colour histogram
  (HSV, 8 x 8 hue-saturation bins per upper and lower half, square-rooted: a classic
  non-learned re-id baseline);
* contact sheets for the hand check (``sheet_*.png``): for the largest box of frames 100, 200,
  ... 700, its 5 nearest crops at least 3 s away, one row per embedding, for a person to
  judge by eye; the sheets show only the time offset, not the tracklet.

Results go to ``--out`` (``check.json`` and the sheets).
"""

import argparse
import copy
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GAP_S = 3.0  # crops of the same tracklet closer than this are left out of a query's ranking
MIN_SPAN_S = 6.0  # a tracklet spanning less than this has no query
QUERY_EVERY = 10  # every 10th crop of a long tracklet is a query
SHEET_FRAMES = (100, 200, 300, 400, 500, 600, 700)
SHEET_HITS = 5


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def link_tracklets(items) -> np.ndarray:
    """A tracklet number per item (see the module docstring)."""
    order = sorted(range(len(items)), key=lambda i: (items[i].frame, items[i].box))
    tracklet = np.full(len(items), -1, np.int64)
    previous, prev_frame, current, cur_frame, next_id = [], None, [], None, 0
    for i in order:
        f = items[i].frame
        if f != cur_frame:
            previous, prev_frame, current, cur_frame = current, cur_frame, [], f
            if prev_frame is not None and f - prev_frame > 1:
                previous = []
        best, best_iou = None, 0.5
        for j in previous:
            a, b = items[i].box, items[j].box
            ratio = (a[2] * a[3]) / float(b[2] * b[3])
            v = iou(a, b)
            if v >= best_iou and 1 / 1.5 <= ratio <= 1.5 and tracklet[j] not in {tracklet[k] for k in current}:
                best, best_iou = j, v
        if best is None:
            tracklet[i], next_id = next_id, next_id + 1
        else:
            tracklet[i] = tracklet[best]
        current.append(i)
    return tracklet


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


def evaluate(dist: np.ndarray, times: np.ndarray, tracklet: np.ndarray, queries) -> dict:
    rank1, aps = [], []
    for q in queries:
        dt = np.abs(times - times[q])
        same = tracklet == tracklet[q]
        keep = ~(same & (dt < GAP_S))
        order = np.argsort(dist[q][keep], kind="stable")
        good = (same & (dt >= GAP_S))[keep][order]
        rank1.append(bool(good[0]))
        hits = np.flatnonzero(good)
        aps.append(float(np.mean((np.arange(len(hits)) + 1) / (hits + 1))))
    return {"rank1": float(np.mean(rank1)), "mAP": float(np.mean(aps)), "queries": len(queries)}


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
        tiles = [tile(paths[query], f"query {name}", (0, 255, 255))]
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


def cmd_check(args) -> None:
    from reid_srdl.search.stores import open_store

    store = open_store(args.store)
    vectors, items = [], []
    for v, it in store.scan():
        vectors.append(v)
        items.extend(it)
    store.close()
    vectors = np.concatenate(vectors)
    paths = [it.crop if os.path.isabs(it.crop) else os.path.join(args.store, it.crop) for it in items]
    times = np.array([it.timestamp if it.timestamp is not None else it.frame / 10.0 for it in items])
    tracklet = link_tracklets(items)
    spans = {}
    for i, t in enumerate(tracklet):
        lo, hi = spans.get(t, (np.inf, -np.inf))
        spans[t] = (min(lo, times[i]), max(hi, times[i]))
    long_ones = {t for t, (lo, hi) in spans.items() if hi - lo >= MIN_SPAN_S}
    queries = []
    for t in sorted(long_ones):
        members = sorted(np.flatnonzero(tracklet == t), key=lambda i: times[i])
        queries.extend(members[::QUERY_EVERY])
    embeddings = {
        "trained": vectors,
        "untrained": untrained_features(args.model, paths),
        "colour histogram": colour_histograms(paths),
    }
    dists = {name: distances(f.astype(np.float64)) for name, f in embeddings.items()}
    results = {name: evaluate(d, times, tracklet, queries) for name, d in dists.items()}
    os.makedirs(args.out, exist_ok=True)
    sheets = []
    for frame in SHEET_FRAMES:
        here = [i for i, it in enumerate(items) if it.frame == frame]
        if not here:
            continue
        q = max(here, key=lambda i: items[i].box[2] * items[i].box[3])
        rows = []
        for name, d in dists.items():
            far = np.abs(times - times[q]) >= GAP_S
            cand = np.flatnonzero(far)
            hits = cand[np.argsort(d[q][cand], kind="stable")][:SHEET_HITS]
            rows.append((name, [int(h) for h in hits]))
        sheet = os.path.join(args.out, f"sheet_{frame:04d}.png")
        contact_sheet(sheet, rows, paths, times, q)
        sheets.append({"frame": frame, "query_box": list(items[q].box), "sheet": sheet, "hits": dict(rows)})
    summary = {
        "store": args.store,
        "model": args.model,
        "items": len(items),
        "tracklets": int(tracklet.max() + 1),
        "long_tracklets": len(long_ones),
        "gap_s": GAP_S,
        "results": results,
        "sheets": sheets,
    }
    with open(os.path.join(args.out, "check.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{len(items)} crops, {summary['tracklets']} tracklets, {len(long_ones)} spanning >= {MIN_SPAN_S:g} s")
    for name, r in results.items():
        print(f"{name:>17}: Rank-1 {100 * r['rank1']:.1f}%  mAP {100 * r['mAP']:.1f}%  ({r['queries']} queries)")
    print(f"contact sheets for the hand check: {args.out}/sheet_*.png")


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
    args = p.parse_args(argv)
    {"picture": cmd_picture, "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    main()
