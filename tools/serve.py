#!/usr/bin/env python
"""Serve a gallery: a JSON API and one page to search it from a browser.

    python tools/serve.py --gallery gallery.npz --model runs/RUN [--host 127.0.0.1 --port 8000]

Open http://127.0.0.1:8000/ and drop a query image.  API: POST /search (multipart 'file' or
form 'gallery_index'; 'k', 'threshold', 'far', 'exclude_camera'), POST /gallery (multipart
'files'; optional 'pids', 'cameras' as c1,c2,...), GET /stats, GET /health.  Added images are
stored in --upload-dir (default: uploads/ beside the gallery file) and the gallery file is
rewritten atomically after each add.  Needs the optional extra: pip install -e ".[serve]".
Bad input: one line on stderr and exit code 2.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_srdl.core.errors import ReidSrdlError  # noqa: E402
from reid_srdl.core.logs import configure_cli_logging  # noqa: E402

EXIT_BAD_INPUT = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", required=True, help="a gallery file written by tools/search.py build")
    p.add_argument("--model", required=True, help="the model that built it (run directory, final.pt, .onnx)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--upload-dir", help="where POST /gallery stores images (default: uploads/ beside the gallery)")
    p.add_argument("--no-uploads", action="store_true", help="disable POST /gallery")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest accepted upload (default: 8 MB)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--allow-model-mismatch", action="store_true")
    p.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="load a TorchScript --model not named *.ts (it is a program: only one you made or trust)",
    )
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535; got {args.port}")
    if args.max_upload_mb <= 0:
        p.error(f"--max-upload-mb must be positive; got {args.max_upload_mb}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_cli_logging()
    try:
        try:
            import uvicorn

            from reid_srdl.serve.app import create_app
        except ImportError as e:
            raise ReidSrdlError(
                f'the web app needs the serve extra ({e.name} is missing): pip install -e ".[serve]"'
            ) from None  # noqa: E501
        from reid_srdl.search import ReIDSearcher

        searcher = ReIDSearcher.load(
            args.gallery,
            model=args.model,
            allow_mismatch=args.allow_model_mismatch,
            trust_torchscript=args.trust_torchscript,
            device=args.device,
        )
        upload_dir = (
            None
            if args.no_uploads
            else (args.upload_dir or os.path.join(os.path.dirname(os.path.abspath(args.gallery)), "uploads"))
        )
        app = create_app(searcher, os.path.abspath(args.gallery), upload_dir, int(args.max_upload_mb * (1 << 20)))
    except (ReidSrdlError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"serving {args.gallery} ({len(searcher)} images) on http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
