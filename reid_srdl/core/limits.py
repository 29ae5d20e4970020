"""Every size limit applied to a file from outside, in one place, with its default and why.

A file from a stranger must not make the process allocate or compute far more than its own
size: a few hundred bytes must never become gigabytes.  Each reader checks the sizes a file
*declares* (image dimensions, archive members, tensor storages, network shapes) against
these limits before it allocates anything, and refuses with one line naming the file, the
value and the limit.

The defaults are far above anything the project's own files or the public data sets reach
(person crops are ~128 x 64 pixels, the largest re-id set has ~4,000 identities, a
ResNet-50 ``final.pt`` holds ~100 MB).  They are module attributes read at each check, so a
program that needs more can raise one (``reid_srdl.core.limits.MAX_IMAGE_PIXELS = ...``);
docs/deployment.md lists them.
"""

from reid_srdl.core.errors import ReidSrdlError

MiB = 1 << 20
GiB = 1 << 30

# -- images -------------------------------------------------------------------------------
# Pixels of one decoded image (width x height), checked on the header before decoding: a
# 40-megapixel photo (7,700 x 5,200) still passes.  PIL's own guard only warns up to
# 89 megapixels and raises above 179; a PNG of 20,000 x 20,000 zeros is 1.2 GB decoded.
MAX_IMAGE_PIXELS = 40_000_000

# -- networks described by a file (final.pt spec, ONNX / TorchScript metadata, gallery settings)
# Input height and width a network is run at: every image is resized to this, so 20,000 x
# 20,000 would be 4.8 GB per image before the network runs.  Re-id nets use 256 x 128,
# classification nets 32..224.
MAX_INPUT_SIDE = 2048
# Classes of a classifier head (the largest public re-id and face sets stay below 100,000).
MAX_NUM_CLASSES = 1_000_000
# Size of the embedding (feature layer); ResNet-50's pooled map is 2,048.
MAX_FEATURE_DIM = 65_536
# Input channels (1 grey, 3 RGB, 4 RGB + depth...).
MAX_IN_CHANNELS = 64
# Any other whole number in an architecture spec (depth, widen factor, stride...).
MAX_SPEC_INTEGER = 100_000
# Characters of one string read from a file's metadata (names, paths, notes).
MAX_STRING_CHARS = 100_000
# Nesting of containers in data read from a file (dicts in lists in dicts...): the
# project's files nest 5 levels; deeper is refused rather than walked (RecursionError).
MAX_NESTING_DEPTH = 100

# -- archives (.pt zip files, .npz files) -------------------------------------------------
# An archive may expand beyond its size on disk (compressed members) by this factor...
MAX_ARCHIVE_EXPANSION = 20
# ...on top of this much, so that small legitimately compressed files always load.  The
# project and torch.save store members uncompressed (expansion 1); a zip bomb expands ~1000x.
ARCHIVE_EXPANSION_ALLOWANCE = 64 * MiB
# Members of one archive (a ResNet-50 final.pt has ~330).
MAX_ARCHIVE_MEMBERS = 100_000

# -- downloads (weights fetched by URL or model.pretrained) ---------------------------------
# Bytes of one downloaded file: the largest published re-id/ImageNet backbone weights are
# well under 1 GB (ResNet-152 230 MB, ViT-L 1.2 GB); a server that sends more, or declares
# more in Content-Length, is refused before the disk fills.
MAX_DOWNLOAD_BYTES = 4 * GiB

# -- pickles inside .pt files -------------------------------------------------------------
# What a call inside a pickle may allocate beyond the file's own data: torch's safe loader
# allows e.g. ``builtins.bytearray(n)`` and the legacy tensor constructors
# (``torch.FloatTensor(n)``), which allocate whatever ``n`` says.  The project's files
# never contain such calls; tensors come from the file's own storages.
MAX_PICKLE_CALL_BYTES = 16 * MiB
# Memory the objects of one pickle may take once rebuilt (estimated from its opcodes before
# anything is built: an empty dict costs 64 bytes for one byte of pickle).  A state dict's
# pickle takes a few MB; its tensors are counted against the archive, not here.
MAX_PICKLE_OBJECT_BYTES = 1 * GiB


class LimitExceededError(ReidSrdlError, ValueError):
    """A file declares a size beyond one of the limits above (the message names the file,
    what it declares and the limit's name)."""


def human_bytes(n: int) -> str:
    """``1.5 GiB``-style size for messages."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover
