#!/usr/bin/env python
"""Convert a PyTorch file you trust into plain data that the safe loader reads.

    python tools/convert_checkpoint.py OLD.pt NEW.pt --i-trust-this-file

Every tool of this project reads .pt files with PyTorch's safe unpickler
(``torch.load(weights_only=True)``), which rebuilds tensors, dicts, lists, strings and
numbers only.  A file that refers to Python classes or functions (written by an older
version, by other code, or by someone else) is refused, because unpickling it could run
any code.  If you trust where OLD.pt came from, this tool loads it ONCE with the unsafe
unpickler -- only with --i-trust-this-file -- turns what it holds into plain data (NumPy
values -> numbers and tensors, objects -> dicts, a pickled nn.Module -> its state_dict),
writes NEW.pt atomically and checks that NEW.pt loads with the safe loader.  NEW.pt is
then safe for anyone to load.  Bad input: one line on stderr, exit code 2.
"""

import argparse
import collections
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_srdl.core.errors import ReidSrdlError  # noqa: E402
from reid_srdl.core.files import check_output_file  # noqa: E402
from reid_srdl.core.logs import configure_cli_logging  # noqa: E402
from reid_srdl.core.torch_files import TRUST_FLAG, UnsafeFileError, convert_to_plain, load_torch_file  # noqa: E402

EXIT_BAD_INPUT = 2


class ConversionError(ReidSrdlError, ValueError):
    """The file cannot be converted (not trusted explicitly, unreadable, or not expressible as data)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="OLD.pt", help="the trusted file to convert")
    p.add_argument("target", metavar="NEW.pt", help="where to write the plain-data file (may be OLD.pt itself)")
    p.add_argument(
        TRUST_FLAG,
        dest="trusted",
        action="store_true",
        help="load OLD.pt with the unsafe unpickler: it can run code; only for a file you trust",
    )
    return p.parse_args(argv)


def load_trusted(path: str):
    """``torch.load(weights_only=False)``: runs whatever the file holds.  Called only with
    the explicit trust flag."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a foreign or broken file: one line, never torch's advice
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConversionError(f"cannot load {path} even with the unsafe unpickler: {first}") from None


def convert(source: str, target: str, trusted: bool) -> str:
    """Write ``target`` from ``source``; returns a one-line summary."""
    from reid_srdl.core.checkpoint import atomic_save

    if not os.path.isfile(source):
        raise ConversionError(f"file not found: {source}")
    check_output_file(target, "converted file")
    try:
        load_torch_file(source, "file")
        already_plain = True
    except UnsafeFileError:
        already_plain = False
    if not trusted:
        if already_plain:
            return f"{source} already holds plain data; it loads safely as it is (nothing written)"
        raise ConversionError(
            f"converting {source} loads it with PyTorch's unsafe unpickler, which runs any code the file "
            f"holds; do it only for a file you trust, by adding {TRUST_FLAG}"
        )
    counts = collections.Counter()
    try:
        plain = convert_to_plain(load_trusted(source), os.path.basename(source), counts)
    except TypeError as e:
        raise ConversionError(f"cannot convert {source}: {e}") from None
    atomic_save(plain, target)
    load_torch_file(target, "converted file")  # the point of it all: it loads safely now
    done = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing needed converting"
    return f"wrote {target}: plain data, loads with the safe loader (converted: {done})"


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_cli_logging()
    try:
        print(convert(args.source, args.target, args.trusted))
    except ReidSrdlError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
