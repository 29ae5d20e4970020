"""Convert a PyTorch file that refers to Python objects into plain data the safe loader reads.

    python tools/convert_checkpoint.py OLD.pt NEW.pt        (or: reid-convert-checkpoint OLD.pt NEW.pt)

Every tool of this project reads .pt files with PyTorch's safe unpickler
(``torch.load(weights_only=True)``), which rebuilds tensors, dicts, lists, strings and
numbers only.  A file that refers to Python classes or functions (written by an older
version, by other code, or by someone else) is refused there, because unpickling it the
ordinary way could run any code.  This tool reads such a file with the same safe unpickler,
every class or function the file names replaced by an inert stand-in that records what the
file asked for and runs nothing (reid_srdl.core.inert_pickle): nothing the file names is
imported or called, whoever made it.  What was recorded becomes plain data (an object -> a
dict of its attributes, a pickled nn.Module -> its state_dict, NumPy values -> numbers and
tensors, a path -> a string); a call with no data meaning (``open(...)``, an Enum member) is
refused by name.  NEW.pt is written atomically and checked with the safe loader.  Bad
input: one line on stderr, exit code 2.
"""

import argparse
import collections
import os

from reid_srdl.core import cli
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import check_output_file
from reid_srdl.core.inert_pickle import InertLoadError, convert_to_plain, load_inert
from reid_srdl.core.torch_files import UnreadableFileError, UnsafeFileError, load_torch_file


class ConversionError(ReidSrdlError, ValueError):
    """The file cannot be converted (unreadable, unreadable without running code, or not expressible as data)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="OLD.pt", help="the file to convert")
    p.add_argument("target", metavar="NEW.pt", help="where to write the plain-data file (may be OLD.pt itself)")
    # Older versions loaded OLD.pt with the unsafe unpickler behind this flag; nothing is run
    # any more, so the flag is accepted (scripts keep working) and changes nothing.
    p.add_argument("--i-trust-this-file", dest="trusted", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def convert(source: str, target: str) -> str:
    """Write ``target`` from ``source``; returns a one-line summary."""
    from reid_srdl.core.checkpoint import atomic_save

    if not os.path.isfile(source):
        raise ConversionError(f"file not found: {source}")
    check_output_file(target, "converted file")
    try:
        load_torch_file(source, "file")
        return f"{source} already holds plain data; it loads safely as it is (nothing written)"
    except UnsafeFileError:
        pass  # what this tool is for
    except UnreadableFileError as e:
        raise ConversionError(f"cannot convert {source}: {e.reason}") from None
    try:
        raw = load_inert(source)
    except InertLoadError as e:
        raise ConversionError(f"cannot convert {source} without running code: {e}") from None
    counts = collections.Counter()
    try:
        plain = convert_to_plain(raw, os.path.basename(source), counts)
    except TypeError as e:
        raise ConversionError(f"cannot convert {source}: {e}") from None
    atomic_save(plain, target)
    load_torch_file(target, "converted file")  # the point of it all: it loads safely now
    done = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing needed converting"
    return f"wrote {target}: plain data, loads with the safe loader (converted: {done})"


def main(argv=None) -> int:
    """``reid-convert-checkpoint`` / ``python tools/convert_checkpoint.py``: the exit code."""
    return cli.run(_convert, argv)


def _convert(argv) -> None:
    args = parse_args(argv)
    print(convert(args.source, args.target))
