#!/usr/bin/env python
"""Search a gallery of person crops with a trained re-id network.

    python tools/search.py build --model runs/RUN --images crops/ --out gallery.npz
    python tools/search.py add --gallery gallery.npz --model runs/RUN --images more_crops/
    python tools/search.py calibrate --gallery gallery.npz --model runs/RUN --queries labelled/ --far 0.01
    python tools/search.py query --gallery gallery.npz --model runs/RUN person.jpg --k 10 \\
        --threshold calibrated --json hits.json --html hits.html
    python tools/search.py info --gallery gallery.npz

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
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_srdl.core.errors import ReidSrdlError  # noqa: E402
from reid_srdl.core.logs import configure_cli_logging  # noqa: E402

EXIT_BAD_INPUT = 2


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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="embed a folder of crops into a new gallery file")
    b.add_argument("--model", required=True, help="a run directory, final.pt, model.onnx or model.ts (TorchScript)")
    b.add_argument("--images", required=True, help="folder of crops (searched recursively) or one image")
    b.add_argument("--labels", default="auto", help="auto | market | none | FILE.csv (default: auto)")
    b.add_argument("--out", required=True, metavar="GALLERY.npz")
    b.add_argument("--skip-unreadable", action="store_true", help="leave undecodable images out (listed on stderr)")
    _embedding_args(b, True)

    a = sub.add_parser("add", help="embed more crops into an existing gallery file")
    a.add_argument("--gallery", required=True)
    a.add_argument("--model", required=True)
    a.add_argument("--images", required=True)
    a.add_argument("--labels", default="auto")
    a.add_argument("--out", help="write here instead of updating --gallery")
    a.add_argument("--skip-unreadable", action="store_true")
    a.add_argument(
        "--allow-model-mismatch", action="store_true", help="accept a model/settings the gallery did not record"
    )
    _embedding_args(a, False)

    c = sub.add_parser("calibrate", help="set the gallery's match threshold from labelled queries")
    c.add_argument("--gallery", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--queries", required=True, help="labelled query crops (names or --labels CSV)")
    c.add_argument("--labels", default="market", help="market | FILE.csv (default: market)")
    c.add_argument("--far", type=float, default=0.01, help="target false accept rate (default: 0.01 = 1%%)")
    c.add_argument("--out", help="write here instead of updating --gallery")
    c.add_argument("--plot", metavar="DIST.png", help="PNG of the genuine/impostor distances and the threshold")
    c.add_argument("--allow-model-mismatch", action="store_true")
    _embedding_args(c, False)

    q = sub.add_parser("query", help="rank the gallery for query images")
    q.add_argument("queries", metavar="IMAGE_OR_DIR")
    q.add_argument("--gallery", required=True)
    q.add_argument("--model", required=True)
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--threshold", help="'calibrated' or a distance: adds a match / no match decision")
    q.add_argument("--far", type=float, help="the threshold for this false accept rate, from the calibration")
    q.add_argument("--exclude-camera", metavar="cN", help="leave out every gallery image of this camera")
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

    i = sub.add_parser("info", help="what a gallery file holds")
    i.add_argument("--gallery", required=True)
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    args = p.parse_args(argv)
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
    opts = {"batch_size": args.batch_size, "workers": args.workers, "device": args.device, "progress": True}
    for key in ("height", "width", "precision"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    for key in ("flip", "normalize"):
        value = getattr(args, key)
        if value is not None:
            opts[key] = value
        elif not explicit_only:
            opts[key] = False
    if args.fast:
        opts["fast"] = True
    return opts


def _check_output(path, what):
    if path and os.path.isdir(path):
        raise ReidSrdlError(f"{what} {path} is a folder; give a file name")


def _load(args):
    from reid_srdl.search import ReIDSearcher

    return ReIDSearcher.load(
        args.gallery,
        model=args.model,
        allow_mismatch=args.allow_model_mismatch,
        trust_torchscript=args.trust_torchscript,
        **_embedding(args, explicit_only=True),
    )


def _labels(spec, paths):
    from reid_srdl.search.labels import resolve_labels

    return resolve_labels(spec, paths)


def cmd_build(args) -> None:
    from reid_srdl.search import ReIDSearcher
    from reid_srdl.search.labels import list_images

    _check_output(args.out, "--out")
    paths = list_images(args.images)
    pids, camids, how = _labels(args.labels, paths)
    s = ReIDSearcher.from_images(
        args.model,
        paths,
        pids,
        camids,
        skip_unreadable=args.skip_unreadable,
        trust_torchscript=args.trust_torchscript,
        **_embedding(args, explicit_only=False),
    )
    s.save(args.out)
    skipped = len(paths) - len(s)
    print(
        f"wrote {args.out}: {len(s)} images, {s.dim}-d features, labels {how}"
        + (f"; skipped {skipped} unreadable (listed above)" if skipped else "")
    )


def cmd_add(args) -> None:
    from reid_srdl.search.labels import list_images

    out = args.out or args.gallery
    _check_output(out, "--out")
    s = _load(args)
    paths = list_images(args.images)
    pids, camids, how = _labels(args.labels, paths)
    before = len(s)
    added = s.add_images(paths, pids, camids, skip_unreadable=args.skip_unreadable)
    s.save(out)
    print(
        f"wrote {out}: {before} + {len(added)} images, labels {how}"
        + (f"; skipped {len(paths) - len(added)} unreadable (listed above)" if len(added) < len(paths) else "")
    )


def cmd_calibrate(args) -> None:
    from reid_srdl.core.files import OutputBatch
    from reid_srdl.search.labels import list_images

    out = args.out or args.gallery
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
        s.save(batch.path(out))
    print(
        f"threshold {cal.threshold:.4f} at FAR {100 * cal.far:g}% (achieved {100 * cal.achieved_far:.2f}% on "
        f"{cal.num_impostor_probes} absent-person probes; TAR {100 * cal.tar:.1f}%, DIR {100 * cal.dir:.1f}%)"
    )
    print(f"wrote {out}" + (f" and {args.plot}" if args.plot else ""))


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
    from reid_srdl.search.gallery import camera_name
    from reid_srdl.search.labels import list_images, parse_camera
    from reid_srdl.search.report import results_html

    _check_output(args.json, "--json")
    _check_output(args.html, "--html")
    paths = list_images(args.queries)
    exclusion = {}
    if args.exclude_camera:
        exclusion["exclude_camid"] = parse_camera(args.exclude_camera)
    if args.exclude:
        pids, camids, _ = _labels(args.labels if args.labels != "none" else "market", paths)
        if pids is None:
            raise ReidSrdlError("--exclude needs labelled queries (Market-1501 names or --labels FILE.csv)")
        if args.exclude == "same-camera":
            if "exclude_camid" in exclusion:
                raise ReidSrdlError("give --exclude-camera or --exclude same-camera, not both")
            exclusion["exclude_camid"] = camids
        else:
            exclusion["exclude_pid_camid"] = np.stack([pids, camids], axis=1)
    threshold = _threshold(args)
    s = _load(args)
    s.decision_threshold(**threshold)  # a missing calibration is found before any image is embedded
    results = s.search(paths, k=args.k, **exclusion, **threshold)
    for path, r in zip(paths, results):
        print(
            f"query {path}"
            + (f": {r.decision} (nearest {r.nearest_distance:.4f}, threshold {r.threshold:.4f})" if r.decision else "")
        )
        for rank in range(len(r)):
            pid = int(r.pids[rank])
            print(
                f"  {rank + 1:3d}  {r.distances[rank]:8.4f}  pid {pid if pid >= 0 else '?':>5}  "
                f"{camera_name(int(r.camids[rank])) or '?':>4}  {'' if r.paths is None else r.paths[rank]}"
            )
    with OutputBatch() as batch:
        if args.json:
            write_json_atomic(batch.path(args.json), [{"query": p, **r.to_dict()} for p, r in zip(paths, results)])
        if args.html:
            page = results_html(list(zip(paths, results)), title=f"Search in {args.gallery}")
            write_bytes_atomic(batch.path(args.html), page.encode("utf-8"))
    for out in (args.json, args.html):
        if out:
            print(f"wrote {out}")


def gallery_info(path: str) -> dict:
    import numpy as np

    from reid_srdl.search.fingerprint import describe_model
    from reid_srdl.search.gallery import GalleryIndex, camera_name

    g = GalleryIndex.load(path)
    pids, camids = g.pids, g.camids
    known = pids[pids >= 0]
    folders = sorted({os.path.dirname(os.path.abspath(p)) for p in g.paths}) if g.paths is not None else []
    return {
        "file": path,
        "images": len(g),
        "dim": g.dim,
        "identities": int(len(np.unique(known))),
        "unlabelled": int((pids < 0).sum()),
        "cameras": [camera_name(int(c)) for c in np.unique(camids[camids >= 0])],
        "model": describe_model(g.model),
        "model_fingerprint": g.model,
        "settings": g.settings,
        "calibration": g.calibration,
        "folders": folders[:20],
        "num_folders": len(folders),
    }


def cmd_info(args) -> None:
    info = gallery_info(args.gallery)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(
        f"{info['file']}: {info['images']} images, {info['dim']}-d features, {info['identities']} identities, "
        f"{info['unlabelled']} unlabelled, cameras {', '.join(info['cameras']) or 'unknown'}"
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
    from reid_srdl.search.ingest import MotionOptions, format_utc, parse_start_time, plan_ingest
    from reid_srdl.search.ingest.pipeline import run_ingest

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
        _embedding(args, explicit_only=False),
        allow_mismatch=args.allow_model_mismatch,
        save_detections=args.save_detections,
    )
    when = f", {format_utc(r.first_time)} to {format_utc(r.last_time)}" if r.first_time is not None else ""
    print(
        f"{args.video} (camera {args.camera}): {r.frames} frames, {r.detections} detections"
        + (f" ({r.clipped} clipped to the frame)" if r.clipped else "")
        + (f", {r.below_conf} below --min-conf" if r.below_conf else "")
        + f"; {r.sampled} crops{when}: {r.new} new, {r.skipped} already in {args.store}"
    )


COMMANDS = {"build": cmd_build, "add": cmd_add, "calibrate": cmd_calibrate, "query": cmd_query, "info": cmd_info}
COMMANDS["ingest"] = cmd_ingest


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_cli_logging()
    try:
        COMMANDS[args.command](args)
    except (ReidSrdlError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
