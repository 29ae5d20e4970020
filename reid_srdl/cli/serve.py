"""Serve a gallery: a JSON API and one page to search it from a browser.

    python tools/serve.py --store gallery/ --model runs/RUN [--host 127.0.0.1 --port 8000]
    REID_SRDL_TOKEN=... python tools/serve.py --store http://127.0.0.1:19530 --model runs/RUN --allow-add \\
        --upload-dir /data/uploads --image-root /data/footage
    reid-serve --store gallery/ --model runs/RUN            # the same, as an installed command

--store PATH_OR_URI is the argument of tools/search.py: a store folder, a Milvus Lite file
(gallery.db, one process), a Milvus server (http://host:port: several serve.py processes can
share it), or an .npz gallery file of the first releases (--gallery FILE.npz still works).

Open http://127.0.0.1:8000/ and drop a query image.  API: POST /search (multipart 'file' or
form 'gallery_id'; 'k', 'threshold' or 'far', 'exclude_camera', 'cameras', 'time_from',
'time_to'), GET /stats, GET /health, GET /image/{id}, GET /frame/{id}; with --allow-add also
POST /gallery (multipart 'files'; optional 'pids', 'cameras') for the owner only: the token
is printed at start-up (or given in $REID_SRDL_TOKEN or --token) and sent as
'Authorization: Bearer TOKEN'; the page gets it from the link printed at start-up.  Added
images are stored in --upload-dir (default: the store's crops folder, or uploads/ beside an
.npz file, which is rewritten after each add).

Only loopback (127.0.0.1) is served unless --host is given; requests whose Host header is not
127.0.0.1, localhost, the --host or an --allowed-host (with the port), or whose Origin is not
this server's own, are refused.  /image and /frame read only image and video files inside
the --image-root folders (default: the gallery's own folder, its crops and the uploads).
See docs/search.md.  Needs the optional extra: pip install -e ".[serve]".  Bad input: one
line on stderr, exit code 2.
"""

import argparse
import errno
import os
import socket
import sys

from reid_srdl.core import cli
from reid_srdl.core.errors import ReidSrdlError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--store", metavar="PATH_OR_URI", help="a store folder, a Milvus Lite .db, http(s)://host:port, or .npz"
    )
    where.add_argument("--gallery", metavar="GALLERY.npz", help="an .npz gallery file (same as --store FILE.npz)")
    p.add_argument("--model", required=True, help="the model that built it (run directory, final.pt, .onnx)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="default: 8000; 0: any free port (printed)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name clients reach this server by (its Host header), e.g. behind --host 0.0.0.0; repeatable",
    )
    p.add_argument("--allow-add", action="store_true", help="accept POST /gallery from the owner (token required)")
    p.add_argument("--no-uploads", action="store_true", help=argparse.SUPPRESS)  # the default now; old command lines
    p.add_argument(
        "--token",
        help="the owner's token for adds (default: $REID_SRDL_TOKEN, else a random one printed at start-up); "
        "prefer the environment variable: a command line is visible to other users in ps",
    )
    p.add_argument(
        "--upload-dir",
        help="where POST /gallery stores images (default: the store's crops folder, or uploads/ beside an .npz)",
    )
    p.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder GET /image and /frame may read images and videos from; repeatable "
        "(default: the gallery's own folder, its crops folder and the upload folder)",
    )
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest accepted upload (default: 8 MB)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--allow-model-mismatch", action="store_true")
    p.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="load a TorchScript --model not named *.ts (it is a program: only one you made or trust)",
    )
    args = p.parse_args(argv)
    if not 0 <= args.port < 65536:
        p.error(f"--port must be in 1..65535 (0: any free port); got {args.port}")
    if args.no_uploads and args.allow_add:
        p.error("--no-uploads and --allow-add contradict each other (adds are off unless --allow-add)")
    if not args.max_upload_mb > 0 or args.max_upload_mb > 1024:
        p.error(f"--max-upload-mb must be in (0, 1024]; got {args.max_upload_mb}")
    if args.token is not None and not args.allow_add:
        p.error("--token is the owner's token for adds: give --allow-add with it")
    return args


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or an OSError that names them (a busy port is found
    before the model is loaded and before anything is printed)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ReidSrdlError(f"--host {host!r}: not an address this machine can listen on ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: not past a live listener
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        hint = "; another program uses that port: pick another with --port" if e.errno == errno.EADDRINUSE else ""
        raise ReidSrdlError(f"cannot listen on {host}:{port}: {(e.strerror or str(e)).lower()}{hint}") from None
    return sock


def check_folders(folders) -> list:
    for folder in folders:
        if not os.path.isdir(folder):
            raise ReidSrdlError(f"--image-root {folder}: not a folder")
    return [os.path.abspath(f) for f in folders]


def owner_token(args):
    """The token for adds (None when adds are off) and whether it was generated here."""
    if not args.allow_add:
        return None, False
    from reid_srdl.serve.guard import TOKEN_ENV, check_token, new_token

    given = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if given is None:
        return new_token(), True
    return check_token(given), False


def upload_folder(args, store, gallery_path):
    """Where adds go: --upload-dir, else the store's own crops folder (deleted with their
    items), else uploads/ beside an .npz gallery; None (adds impossible) for a Milvus server
    without a crops folder."""
    if args.upload_dir:
        return os.path.abspath(args.upload_dir)
    if store.crop_dir:
        return os.path.join(store.crop_dir, "uploads")
    if gallery_path:
        return os.path.join(os.path.dirname(gallery_path), "uploads")
    return None


def main(argv=None) -> int:
    """``reid-serve`` / ``python tools/serve.py``: the exit code (reid_srdl/core/cli.py)."""
    return cli.run(_serve, argv)


def _serve(argv) -> None:
    args = parse_args(argv)
    sock = None
    lock = None
    searcher = None
    target = args.store or args.gallery
    try:
        try:
            import uvicorn

            from reid_srdl.serve.app import create_app
        except ImportError as e:
            raise ReidSrdlError(
                f'the web app needs the serve extra ({e.name} is missing): pip install -e ".[serve]"'
            ) from None
        from reid_srdl.search import ReIDSearcher
        from reid_srdl.search.stores import store_kind
        from reid_srdl.serve.guard import WILDCARD_HOSTS, AccessPolicy
        from reid_srdl.serve.housekeeping import clean_up_after_a_killed_server, default_image_roots

        token, generated = owner_token(args)
        AccessPolicy.for_server(args.host, args.port or 8000, token, args.allowed_host)  # its checks, before binding
        gallery_path = os.path.abspath(target) if store_kind(target) == "npz" else None
        roots = check_folders(args.image_root)
        sock = listen(args.host, args.port)
        port = sock.getsockname()[1]  # the one chosen, with --port 0
        access = AccessPolicy.for_server(args.host, port, token, args.allowed_host)
        searcher = ReIDSearcher.load(
            store=target,
            model=args.model,
            allow_mismatch=args.allow_model_mismatch,
            trust_torchscript=args.trust_torchscript,
            device=args.device,
        )
        upload_dir = upload_folder(args, searcher.store, gallery_path)
        if args.allow_add and upload_dir is None:
            raise ReidSrdlError(
                f"--allow-add: {target} keeps no crops folder of its own; give --upload-dir DIR "
                "(a folder every server of this gallery can read)"
            )
        roots = roots or default_image_roots(searcher.store, gallery_path, upload_dir)
        lock = clean_up_after_a_killed_server(gallery_path, upload_dir, writer=args.allow_add)
        app = create_app(
            searcher,
            gallery_path,
            upload_dir if args.allow_add else None,
            int(args.max_upload_mb * (1 << 20)),
            access=access,
            image_roots=roots,
        )
    except BaseException:  # nothing held stays held; the runner reports the error
        if sock is not None:
            sock.close()
        if lock is not None:
            lock.release()
        if searcher is not None:
            searcher.close()
        raise
    service = app.state.service
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in WILDCARD_HOSTS else shown_host}:{port}/"
    mode = "adds on, for the owner only" if service.can_add else "read-only: --allow-add to accept adds"
    print(f"serving {target} ({len(searcher)} images) on {url} ({mode})")
    if service.can_add:
        if generated:
            print(f"owner's link (adds allowed; keep it to yourself): {url}?token={token}")
        else:
            print(f"owner's link: {url}?token=<the token you gave>")
    outside = service.images_outside_roots()
    if outside is None:
        print(f"note: /image and /frame read only inside {', '.join(service.roots.folders)}", file=sys.stderr)
    elif outside:
        print(
            f"note: {outside} of {len(searcher)} gallery images are not image files inside "
            f"{', '.join(service.roots.folders)}; /image will not show them (give --image-root DIR)",
            file=sys.stderr,
        )
    if args.host in WILDCARD_HOSTS and not args.allowed_host:
        print(
            f"note: listening on every interface, but only requests addressed to {', '.join(sorted(access.hosts))} "
            "are answered; add --allowed-host NAME for each name clients use",
            file=sys.stderr,
        )
    sys.stdout.flush()
    try:
        config = uvicorn.Config(app, host=args.host, port=port, log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if lock is not None:
            lock.release()
        searcher.close()
