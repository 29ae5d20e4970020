"""Search a gallery of person crops with a trained re-id network.

    python tools/search.py build --model runs/RUN --images crops/ --store gallery/
    python tools/search.py add --store gallery/ --model runs/RUN --images more_crops/
    python tools/search.py calibrate --store gallery/ --model runs/RUN --queries labelled/ --far 0.01
    python tools/search.py query --store gallery/ --model runs/RUN person.jpg --k 10 \\
        --threshold calibrated --camera c1 --from 2024-05-01T08:00 --json hits.json --html hits.html
    python tools/search.py info --store gallery/
    python tools/search.py delete --store gallery/ --pid 17          (or --track, --camera, --before TIME)
    python tools/search.py prune --store gallery/ --older-than 30d
    python tools/search.py convert old_gallery.npz --store gallery/
    reid-search query --store gallery/ --model runs/RUN person.jpg     # installed: reid-search = tools/search.py

--store PATH_OR_URI: a folder (the faiss store, created by build), a Milvus Lite file
(gallery.db) or a Milvus server (http://host:19530; pip install -e ".[milvus]"), or an
.npz gallery file of the first releases (--gallery FILE.npz and --out FILE.npz still work).
Times are ISO 8601 (2024-05-01T14:02:11Z; no offset means UTC).

Labels (--labels): "auto" (default) parses pids and cameras from Market-1501 file names
(0002_c1s1_000451_03.jpg: pid 2, camera c1) when every name is one and leaves images
unlabelled (pid/camera unknown) when none is; "market", "none", or a CSV file with a
header path,pid,camera (c1, c2...) or path,pid,camid (0-based).  Cameras are printed and
parsed as in file names (c1, c2...); the Python API and the JSON also give the 0-based camid.

The match decision ("is this person in the gallery?") needs a threshold: "calibrated"
(stored by `calibrate`, at a false accept rate, Liao et al. 2014) or a distance.
Bad input: one line on stderr and exit code 2; output files appear only when complete.
"""

import argparse
import json
import os

from reid_srdl.cli.extraction import given_options
from reid_srdl.core import cli
from reid_srdl.core.errors import ReidSrdlError


def _embedding_args(p: argparse.ArgumentParser, with_defaults: bool) -> None:
    g = p.add_argument_group("embedding (a loaded gallery's recorded settings are the defaults)")
    g.add_argument("--height", type=int, help="input height (default: the model's training size)")
    g.add_argument("--width", type=int, help="input width (default: the model's training size)")
    g.add_argument("--flip", action="store_true", default=None, help="average with the mirrored image's features")
    g.add_argument("--normalize", action="store_true", default=None, help="L2-normalise the features")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), help="extraction precision")
    g.add_argument("--fast", action="store_true", help="BN folding and channels-last (see docs/deployment.md)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=0, help="image decoding processes (default: 0)")
    g.add_argument("--device", default="cpu")
    g.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="load a TorchScript --model not named *.ts (it is a program: only one you made or trust)",
    )


def _store_args(p: argparse.ArgumentParser, out: bool = False) -> None:
    """--store PATH_OR_URI, or the first releases' --gallery FILE.npz (one of them)."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--store", metavar="PATH_OR_URI", help="a store folder, a Milvus Lite .db, http(s)://host:port, or .npz"
    )
    g.add_argument("--gallery", metavar="GALLERY.npz", help="an .npz gallery file (same as --store FILE.npz)")
    if out:
        p.add_argument("--out", metavar="GALLERY.npz", help="with an .npz gallery: write here instead of updating it")


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index",
        metavar="KIND[:key=value,...]",
        help="a new store's index: flat (default), ivf_flat, ivf_pq (folder: nlist, nprobe, pq_m, rescore, "
        "train_size); FLAT, IVF_FLAT, HNSW (Milvus: nlist, nprobe, M, efConstruction, ef), e.g. ivf_pq:nlist=4096",
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="embed a folder of crops into a gallery (a new one, or added to a store)")
    b.add_argument("--model", required=True, help="a run directory, final.pt, model.onnx or model.ts (TorchScript)")
    b.add_argument("--images", required=True, help="folder of crops (searched recursively) or one image")
    b.add_argument("--labels", default="auto", help="auto | market | none | FILE.csv (default: auto)")
    bt = b.add_mutually_exclusive_group(required=True)
    bt.add_argument("--store", metavar="PATH_OR_URI", help="a store folder, Milvus .db or URI (created if missing)")
    bt.add_argument("--out", metavar="GALLERY.npz", help="write an .npz gallery file")
    _index_arg(b)
    b.add_argument("--skip-unreadable", action="store_true", help="leave undecodable images out (listed on stderr)")
    b.add_argument(
        "--allow-model-mismatch", action="store_true", help="add to a store that records another model/settings"
    )
    _embedding_args(b, True)

    a = sub.add_parser("add", help="embed more crops into an existing gallery")
    _store_args(a, out=True)
    a.add_argument("--model", required=True)
    a.add_argument("--images", required=True)
    a.add_argument("--labels", default="auto")
    a.add_argument("--skip-unreadable", action="store_true")
    a.add_argument(
        "--allow-model-mismatch", action="store_true", help="accept a model/settings the gallery did not record"
    )
    _embedding_args(a, False)

    c = sub.add_parser("calibrate", help="set the gallery's match threshold from labelled queries")
    _store_args(c, out=True)
    c.add_argument("--model", required=True)
    c.add_argument("--queries", required=True, help="labelled query crops (names or --labels CSV)")
    c.add_argument("--labels", default="market", help="market | FILE.csv (default: market)")
    c.add_argument("--far", type=float, default=0.01, help="target false accept rate (default: 0.01 = 1%%)")
    c.add_argument("--plot", metavar="DIST.png", help="PNG of the genuine/impostor distances and the threshold")
    c.add_argument("--allow-model-mismatch", action="store_true")
    _embedding_args(c, False)

    q = sub.add_parser("query", help="rank the gallery for query images")
    q.add_argument("queries", metavar="IMAGE_OR_DIR")
    _store_args(q)
    q.add_argument("--model", required=True)
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--threshold", help="'calibrated' or a distance: adds a match / no match decision")
    q.add_argument("--far", type=float, help="the threshold for this false accept rate, from the calibration")
    q.add_argument(
        "--exclude-camera", metavar="NAME", help="leave out every gallery image of this camera (c1, lobby...)"
    )
    q.add_argument("--camera", action="append", metavar="NAME", help="only this camera (repeat for several)")
    q.add_argument("--from", dest="time_from", metavar="TIME", help="only items seen at or after TIME (ISO 8601)")
    q.add_argument("--to", dest="time_to", metavar="TIME", help="only items seen at or before TIME (ISO 8601)")
    q.add_argument(
        "--exclude",
        choices=("same-camera", "same-person-camera"),
        help="with labelled queries: leave out their own camera, or only the same person in the same "
        "camera (the evaluation protocol)",
    )
    q.add_argument("--labels", default="auto", help="query labels, for --exclude (default: auto)")
    q.add_argument("--json", metavar="OUT.json")
    q.add_argument("--html", metavar="OUT.html", help="a page of the ranked crops, distances and decisions")
    q.add_argument("--allow-model-mismatch", action="store_true")
    _embedding_args(q, False)

    _ingest_parser(sub)

    i = sub.add_parser("info", help="what a gallery holds")
    _store_args(i)
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    d = sub.add_parser("delete", help="delete items (and the crops the store wrote) matching every criterion given")
    d.add_argument("--store", required=True, metavar="PATH_OR_URI")
    d.add_argument("--pid", type=int)
    d.add_argument("--track", type=int)
    d.add_argument("--camera", metavar="NAME")
    d.add_argument("--before", metavar="TIME", help="items seen before TIME (ISO 8601; items without a time stay)")
    d.add_argument("--compact", action="store_true", help="folder store: erase the deleted items from disk now")

    r = sub.add_parser("prune", help="delete the items older than an age (retention)")
    r.add_argument("--store", required=True, metavar="PATH_OR_URI")
    r.add_argument("--older-than", required=True, metavar="AGE", help="30d, 12h, 90m, 2w or 45s")
    r.add_argument("--compact", action="store_true", help="folder store: erase the deleted items from disk now")

    v = sub.add_parser("convert", help="copy an .npz gallery file into a store (folder or Milvus)")
    v.add_argument("npz", metavar="OLD.npz")
    v.add_argument("--store", required=True, metavar="PATH_OR_URI", help="the new store (created; must not exist)")
    _index_arg(v)

    args = p.parse_args(argv)
    if args.command == "delete" and all(getattr(args, x) is None for x in ("pid", "track", "camera", "before")):
        p.error("delete needs at least one of --pid, --track, --camera, --before")
    if getattr(args, "k", 1) < 1:
        p.error(f"--k must be a positive integer; got {args.k}")
    if args.command == "query" and args.threshold is not None and args.far is not None:
        p.error("give --threshold or --far, not both")
    for name in ("far",):
        value = getattr(args, name, None)
        if value is not None and not 0 <= value <= 1:
            p.error(f"--far is a rate in [0, 1] (0.01 = 1%); got {value}")
    return args


def _embedding(args, explicit_only: bool) -> dict:
    """Embedding options from the command line (only those given, for a loaded gallery)."""
    opts = given_options(args, progress=True)
    if not args.fast:
        del opts["fast"]  # a store_true flag: "not given" unless given
    if not explicit_only:
        opts = {"flip": False, "normalize": False, **opts}
    if args.trust_torchscript:
        opts["trust_torchscript"] = True
    return opts


def _check_output(path, what):
    if path and os.path.isdir(path):
        raise ReidSrdlError(f"{what} {path} is a folder; give a file name")


def _target(args) -> str:
    return args.store or args.gallery


def _is_npz(target: str) -> bool:
    from reid_srdl.search.stores import store_kind

    return store_kind(target) == "npz"


def _out(args) -> str:
    """Where an .npz gallery is written back (--out, else itself); stores need no output."""
    target = _target(args)
    if getattr(args, "out", None) and not _is_npz(target):
        raise ReidSrdlError(f"--out writes .npz galleries; {target} is a store and is updated in place")
    return (getattr(args, "out", None) or target) if _is_npz(target) else None


def _load(args):
    from reid_srdl.search import ReIDSearcher

    return ReIDSearcher.load(
        _target(args),
        model=args.model,
        allow_mismatch=args.allow_model_mismatch,
        **_embedding(args, explicit_only=True),
    )


def _index(text):
    """``ivf_pq:nlist=4096,pq_m=64`` -> ``{"kind": "ivf_pq", "nlist": 4096, "pq_m": 64}``."""
    if not text:
        return None
    kind, _, rest = text.partition(":")
    spec = {"kind": kind}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not value.strip().isdigit():
            raise ReidSrdlError(f"--index: options are key=integer separated by commas; got {part!r}")
        spec[key.strip()] = int(value)
    return spec


def _labels(spec, paths):
    from reid_srdl.search.labels import resolve_labels

    return resolve_labels(spec, paths)


def cmd_build(args) -> None:
    from reid_srdl.search import ReIDSearcher
    from reid_srdl.search.labels import list_images
    from reid_srdl.search.stores import StoreMissingError

    npz = args.out or (args.store if _is_npz(args.store) else None)
    _check_output(npz, "--out")
    paths = list_images(args.images)
    pids, camids, how = _labels(args.labels, paths)
    if not npz:
        try:  # an existing store: add to it, with its recorded settings as the defaults
            args.gallery = None
            s = _load(args)
        except StoreMissingError:
            s = None
        if s is not None:
            _add(s, args, paths, pids, camids, how, args.store)
            return
    options = _embedding(args, explicit_only=False)
    s = ReIDSearcher.from_images(
        args.model, paths, pids, camids, store=None if npz else args.store, index=_index(args.index),
        skip_unreadable=args.skip_unreadable, **options,
    )  # fmt: skip
    if npz:
        s.save(npz)
    skipped = len(paths) - len(s)
    print(
        f"wrote {npz or args.store}: {len(s)} images, {s.dim}-d features, labels {how}"
        + (f"; skipped {skipped} unreadable (listed above)" if skipped else "")
    )
    s.close()


def _add(s, args, paths, pids, camids, how, out) -> None:
    """Embed ``paths`` into the open gallery ``s``; an .npz is written to ``out``."""
    before = len(s)
    embedded = s.add_images(paths, pids, camids, skip_unreadable=args.skip_unreadable)
    new = len(s) - before
    if out and _is_npz(out):
        s.save(out)
    unreadable, duplicates = len(paths) - len(embedded), len(embedded) - new
    print(
        f"wrote {out or _target(args)}: {before} + {new} images, labels {how}"
        + (f"; skipped {unreadable} unreadable (listed above)" if unreadable else "")
        + (f"; {duplicates} already in the gallery (same source), skipped" if duplicates else "")
    )
    s.close()


def cmd_add(args) -> None:
    from reid_srdl.search.labels import list_images

    out = _out(args)
    _check_output(out, "--out")
    s = _load(args)
    paths = list_images(args.images)
    pids, camids, how = _labels(args.labels, paths)
    _add(s, args, paths, pids, camids, how, out)


def cmd_calibrate(args) -> None:
    from reid_srdl.core.files import OutputBatch
    from reid_srdl.search.labels import list_images

    out = _out(args)
    _check_output(out, "--out")
    _check_output(args.plot, "--plot")
    if args.labels in ("none", "auto"):
        raise ReidSrdlError("calibration needs labelled queries: --labels market or --labels FILE.csv")
    s = _load(args)
    paths = list_images(args.queries)
    pids, camids, how = _labels(args.labels, paths)
    cal = s.calibrate(paths, pids, camids, far=args.far, source=f"{len(paths)} queries in {args.queries} ({how})")
    from reid_srdl.evaluation.open_set import open_set_scores

    with OutputBatch() as batch:
        if args.plot:
            from reid_srdl.evaluation.plots import plot_open_set

            scores = open_set_scores(s.embed_images(paths), s.features, pids, s.pids, camids, s.camids)
            plot_open_set(
                scores.genuine,
                scores.impostor,
                {f"FAR {100 * args.far:g}%": cal.threshold},
                batch.path(args.plot),
                title="Open-set distances (calibration)",
            )
        if out:
            s.save(batch.path(out))
    print(
        f"threshold {cal.threshold:.4f} at FAR {100 * cal.far:g}% (achieved {100 * cal.achieved_far:.2f}% on "
        f"{cal.num_impostor_probes} absent-person probes; TAR {100 * cal.tar:.1f}%, DIR {100 * cal.dir:.1f}%)"
    )
    print(f"wrote {out or _target(args)}" + (f" and {args.plot}" if args.plot else ""))


def _threshold(args):
    if args.far is not None:
        return {"far": args.far}
    if args.threshold is None:
        return {}
    if args.threshold == "calibrated":
        return {"threshold": "calibrated"}
    try:
        return {"threshold": float(args.threshold)}
    except ValueError:
        raise ReidSrdlError(f"--threshold takes 'calibrated' or a distance; got {args.threshold!r}") from None


def cmd_query(args) -> None:
    import numpy as np

    from reid_srdl.core.files import OutputBatch, write_bytes_atomic, write_json_atomic
    from reid_srdl.search.labels import list_images
    from reid_srdl.search.report import results_html

    _check_output(args.json, "--json")
    _check_output(args.html, "--html")
    paths = list_images(args.queries)
    exclusion = {}
    if args.exclude_camera:
        exclusion["exclude_cameras"] = [args.exclude_camera]
    if args.exclude:
        pids, camids, _ = _labels(args.labels if args.labels != "none" else "market", paths)
        if pids is None:
            raise ReidSrdlError("--exclude needs labelled queries (Market-1501 names or --labels FILE.csv)")
        if args.exclude == "same-camera":
            if "exclude_cameras" in exclusion:
                raise ReidSrdlError("give --exclude-camera or --exclude same-camera, not both")
            exclusion["exclude_camid"] = camids
        else:
            exclusion["exclude_pid_camid"] = np.stack([pids, camids], axis=1)
    from reid_srdl.search.stores.records import MAX_CAMERA, check_text, parse_time

    for name in (args.camera or []) + ([args.exclude_camera] if args.exclude_camera else []):
        check_text(name, "--camera/--exclude-camera", MAX_CAMERA)  # before anything is embedded
    if args.camera:
        exclusion["cameras"] = args.camera
    if args.time_from:
        exclusion["time_from"] = parse_time(args.time_from, "--from")
    if args.time_to:
        exclusion["time_to"] = parse_time(args.time_to, "--to")
    threshold = _threshold(args)
    s = _load(args)
    s.decision_threshold(**threshold)  # a missing calibration is found before any image is embedded
    results = s.search(paths, k=args.k, **exclusion, **threshold)
    for path, r in zip(paths, results):
        print(
            f"query {path}"
            + (f": {r.decision} (nearest {r.nearest_distance:.4f}, threshold {r.threshold:.4f})" if r.decision else "")
        )
        for rank, item in enumerate(r.items):
            print(f"  {rank + 1:3d}  {r.distances[rank]:8.4f}  {_describe(item)}")
    with OutputBatch() as batch:
        if args.json:
            write_json_atomic(batch.path(args.json), [{"query": p, **r.to_dict()} for p, r in zip(paths, results)])
        if args.html:
            page = results_html(list(zip(paths, results)), title=f"Search in {_target(args)}")
            write_bytes_atomic(batch.path(args.html), page.encode("utf-8"))
    for out in (args.json, args.html):
        if out:
            print(f"wrote {out}")


def _describe(item) -> str:
    """One line of a hit or a deleted item: pid, camera, time, source, frame, box, track."""
    from reid_srdl.search.stores.records import format_time

    where = item.source + (f" frame {item.frame}" if item.frame >= 0 else "")
    box = "" if item.box is None else " box " + ",".join(str(v) for v in item.box)
    track = f" track {item.track}" if item.track >= 0 else ""
    return (
        f"pid {item.pid if item.pid >= 0 else '?':>5}  {item.camera or '?':>4}  "
        f"{format_time(item.timestamp) or '-'}  {where}{box}{track}"
    )


def gallery_info(target: str) -> dict:
    import numpy as np

    from reid_srdl.search import ReIDSearcher
    from reid_srdl.search.fingerprint import describe_model
    from reid_srdl.search.stores.records import format_time

    with ReIDSearcher.load(target) as s:
        items = [it for _, batch in s.store.scan() for it in batch]
        meta, store = s.meta, s.store
        pids = np.asarray([it.pid for it in items], dtype=np.int64)
        known = pids[pids >= 0]
        has_paths = getattr(store, "has_paths", True)
        folders = sorted({os.path.dirname(os.path.abspath(it.source)) for it in items}) if has_paths else []
        times = [it.timestamp for it in items if it.timestamp is not None]
        return {
            "file": target,
            "engine": store.engine,
            "index": getattr(store, "index", None),
            "images": len(items),
            "dim": s.dim,
            "identities": int(len(np.unique(known))),
            "unlabelled": int((pids < 0).sum()),
            "cameras": sorted({it.camera for it in items if it.camera}),
            "time_range": [format_time(min(times)), format_time(max(times))] if times else None,
            "model": describe_model(meta.get("model")),
            "model_fingerprint": meta.get("model"),
            "settings": meta.get("settings"),
            "calibration": meta.get("calibration"),
            "folders": folders[:20],
            "num_folders": len(folders),
        }


def cmd_info(args) -> None:
    info = gallery_info(_target(args))
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(
        f"{info['file']} ({info['engine']}): {info['images']} images, {info['dim']}-d features, "
        f"{info['identities']} identities, {info['unlabelled']} unlabelled, "
        f"cameras {', '.join(info['cameras']) or 'unknown'}"
        + (f", seen {info['time_range'][0]} .. {info['time_range'][1]}" if info["time_range"] else "")
    )
    print(f"model: {info['model']}")
    print(f"settings: {info['settings'] or 'not recorded'}")
    cal = info["calibration"]
    print(
        "calibration: "
        + (
            f"threshold {cal['threshold']:.4f} at FAR {100 * cal['far']:g}% "
            f"(TAR {100 * cal['tar']:.1f}%, DIR {100 * cal['dir']:.1f}%; "
            f"{cal['source']}; {cal['created']})"
            if cal
            else "none (tools/search.py calibrate)"
        )
    )
    if info["folders"]:
        print(f"image folders ({info['num_folders']}): " + ", ".join(info["folders"]))


def _delete(store_target: str, compact: bool, heading: str = "", **criteria) -> None:
    """Delete, print every removed item (and the crops removed with them), compact if asked.
    ``heading`` is printed once the store is open (a missing store is one line, nothing before it)."""
    from reid_srdl.search.stores import DeleteRequest, open_store

    with open_store(store_target) as store:
        if heading:
            print(heading)
        removed = store.delete(DeleteRequest(**criteria))
        for item in removed:
            print(f"deleted {item.id}  {_describe(item)}" + (f"  (crop {item.crop} removed)" if item.crop else ""))
        erased = store.compact() if compact else 0
        print(
            f"{len(removed)} item(s) deleted from {store_target}; {len(store)} left"
            + (f"; {erased} erased from disk" if compact else "")
        )


def cmd_delete(args) -> None:
    from reid_srdl.search.stores.records import parse_time

    before = None if args.before is None else parse_time(args.before, "--before")
    _delete(args.store, args.compact, pid=args.pid, track=args.track, camera=args.camera, before=before)


def cmd_prune(args) -> None:
    import time

    from reid_srdl.search.stores.records import format_time, parse_age

    before = time.time() - parse_age(args.older_than, "--older-than")
    heading = f"pruning items seen before {format_time(before)} (older than {args.older_than})"
    _delete(args.store, args.compact, heading, before=before)


def cmd_convert(args) -> None:
    from reid_srdl.search.stores import StoreError, open_store, store_kind
    from reid_srdl.search.stores.convert import convert

    if store_kind(args.store) == "npz":
        raise StoreError(f"--store {args.store}: convert writes a store folder or a Milvus gallery, not an .npz")
    with open_store(args.npz) as old:
        n = convert(old, args.store, index=_index(args.index))
    print(f"wrote {args.store}: {n} items from {args.npz}, with its model, settings and calibration")


COMMANDS = {
    "build": cmd_build,
    "add": cmd_add,
    "calibrate": cmd_calibrate,
    "query": cmd_query,
    "info": cmd_info,
    "delete": cmd_delete,
    "prune": cmd_prune,
    "convert": cmd_convert,
}


def _ingest_parser(sub) -> None:
    g = sub.add_parser(
        "ingest",
        help="crops of the people in a video (a MOTChallenge det.txt, or motion) into a gallery store",
        description="Cut the detected people out of a video, embed them and add them to a gallery store with "
        "camera, UTC time, frame and box (docs/ingest.md).  Re-running adds no duplicates.",
    )
    g.add_argument(
        "--store", required=True, help="gallery store: a folder, a Milvus Lite *.db file or http(s)://host:port"
    )
    g.add_argument("--model", required=True, help="a run directory, final.pt, model.onnx or TorchScript file")
    g.add_argument("--video", required=True)
    g.add_argument("--camera", required=True, help="the camera's name, e.g. c1 or lobby")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--detections", metavar="DET.txt", help="MOTChallenge det/gt rows: frame,id,x,y,w,h,conf,... (1-based)"
    )
    src.add_argument("--detect", choices=("motion",), help="no detector: background subtraction (crude, fixed camera)")
    g.add_argument("--start-time", metavar="ISO", help="UTC time of the first frame, e.g. 2024-05-01T14:02:11Z")
    g.add_argument("--fps", type=float, help="frame rate, when the container's is wrong or missing")
    g.add_argument("--every", type=int, default=1, metavar="N", help="only frames 0, N, 2N, ... (default: every frame)")
    g.add_argument("--best", type=int, metavar="K", help="only the K best crops of each track")
    g.add_argument("--best-by", choices=("area", "conf"), default="area", help="best = largest box or most confident")
    g.add_argument(
        "--track-gap", type=int, default=250, metavar="FRAMES", help="--best: a track unseen this long is done"
    )
    g.add_argument("--min-conf", type=float, help="drop detections below this confidence")
    g.add_argument("--motion-warmup", type=int, default=10, metavar="FRAMES", help="frames learned before any box")
    g.add_argument("--motion-min-area", type=float, default=0.002, help="smallest box, as a fraction of the frame")
    g.add_argument("--save-detections", metavar="DET.txt", help="--detect motion: write its boxes as MOTChallenge rows")
    g.add_argument("--allow-model-mismatch", action="store_true")
    _embedding_args(g, False)


def cmd_ingest(args) -> None:
    from reid_srdl.search.ingest import MotionOptions, parse_start_time, plan_ingest
    from reid_srdl.search.ingest.pipeline import run_ingest
    from reid_srdl.search.stores.records import format_time

    if args.save_detections and not args.detect:
        raise ReidSrdlError("--save-detections writes the boxes of --detect motion; the detections are already a file")
    _check_output(args.save_detections, "--save-detections")
    plan = plan_ingest(
        args.video,
        args.camera,
        detections=args.detections,
        motion=MotionOptions(warmup=args.motion_warmup, min_area=args.motion_min_area) if args.detect else None,
        start_time=None if args.start_time is None else parse_start_time(args.start_time),
        fps=args.fps,
        every=args.every,
        best=args.best,
        best_by=args.best_by,
        gap=args.track_gap,
        min_conf=args.min_conf,
    )
    r = run_ingest(
        plan,
        args.store,
        args.model,
        _embedding(args, explicit_only=True),  # an existing gallery's settings are the defaults
        allow_mismatch=args.allow_model_mismatch,
        save_detections=args.save_detections,
    )
    when = f", {format_time(r.first_time)} to {format_time(r.last_time)}" if r.first_time is not None else ""
    print(
        f"{args.video} (camera {args.camera}): {r.frames} frames, {r.detections} detections"
        + (f" ({r.clipped} clipped to the frame)" if r.clipped else "")
        + (f", {r.below_conf} below --min-conf" if r.below_conf else "")
        + f"; {r.sampled} crops{when}: {r.new} new, {r.skipped} already in {args.store}"
    )


COMMANDS["ingest"] = cmd_ingest


def main(argv=None) -> int:
    """``reid-search`` / ``python tools/search.py``: the exit code (reid_srdl/core/cli.py)."""
    return cli.run(_search, argv)


def _search(argv) -> None:
    args = parse_args(argv)
    COMMANDS[args.command](args)
