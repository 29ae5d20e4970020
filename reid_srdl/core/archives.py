"""Zip archives from outside (``.pt`` files written by torch.save, ``.npz`` files), checked
from their directory before any member is read: sizes bounded, checksums verified.

* :func:`check_member_sizes` -- the sizes the archive *declares* for its members, against
  ``limits.MAX_ARCHIVE_MEMBERS`` and the expansion allowed over the file's size on disk
  (``limits.MAX_ARCHIVE_EXPANSION`` x size + ``limits.ARCHIVE_EXPANSION_ALLOWANCE``): a 1 MB
  zip bomb declaring gigabytes is refused before a byte is inflated.  Python's zipfile
  never reads past a member's declared size, so what is declared is what can be read.
* :func:`corrupt_member` -- the first member whose CRC-32 does not match its data.  PyTorch's
  own reader does not verify checksums, so a ``final.pt`` with flipped bytes would otherwise
  load and give wrong features without a word.

Messages are reasons without the file name; the caller names the file (and the kind of
file) in its own one-line error.
"""

import logging
import os
import zipfile
import zlib
from typing import Optional

from reid_srdl.core import limits

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def expansion_allowed(file_size: int) -> int:
    """Bytes an archive of ``file_size`` bytes on disk may declare for all its members."""
    return limits.MAX_ARCHIVE_EXPANSION * file_size + limits.ARCHIVE_EXPANSION_ALLOWANCE


def oversize_reason(archive: zipfile.ZipFile, file_size: int) -> Optional[str]:
    """Why the archive's declared member sizes are refused, or None when they are within the
    limits (see the module docstring)."""
    infos = archive.infolist()
    if len(infos) > limits.MAX_ARCHIVE_MEMBERS:
        return (
            f"it holds {len(infos)} members, more than the limit of {limits.MAX_ARCHIVE_MEMBERS} "
            f"(reid_srdl.core.limits.MAX_ARCHIVE_MEMBERS)"
        )
    declared = sum(info.file_size for info in infos)
    allowed = expansion_allowed(file_size)
    if declared > allowed:
        return (
            f"its members declare {limits.human_bytes(declared)} of contents in a file of "
            f"{limits.human_bytes(file_size)}, more than the {limits.human_bytes(allowed)} allowed "
            f"({limits.MAX_ARCHIVE_EXPANSION} x its size + {limits.human_bytes(limits.ARCHIVE_EXPANSION_ALLOWANCE)}: "
            f"reid_srdl.core.limits.MAX_ARCHIVE_EXPANSION), as a zip bomb does"
        )
    return None


def check_member_sizes(archive: zipfile.ZipFile, path: str, what: str) -> None:
    """:func:`oversize_reason` as a :class:`~reid_srdl.core.limits.LimitExceededError`
    naming ``what`` and ``path``."""
    reason = oversize_reason(archive, os.path.getsize(path))
    if reason:
        raise limits.LimitExceededError(f"refusing to load {what} {path}: {reason}")


def records_checksums(archive: zipfile.ZipFile) -> bool:
    """False when every member's CRC-32 field is 0 although some member has data: the
    writer recorded no checksums (``torch.serialization.set_crc32_options(False)``)."""
    infos = archive.infolist()
    return any(info.CRC != 0 for info in infos) or not any(info.file_size for info in infos)


def corrupt_member(archive: zipfile.ZipFile, source: str = "") -> Optional[str]:
    """The name of the first member whose data does not match its CRC-32 (or that cannot be
    read back), None when all match.  Reads every member once, in chunks (call
    :func:`check_member_sizes` first).  An archive that records no checksums at all is
    accepted with a warning naming ``source``."""
    if not records_checksums(archive):
        logger.warning("%s records no checksums (CRC-32 turned off when saved); it cannot be verified", source)
        return None
    for info in archive.infolist():
        if info.is_dir():
            continue
        try:
            with archive.open(info) as member:
                while member.read(_CHUNK):
                    pass  # zipfile compares the CRC-32 when the member's end is reached
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError):
            return info.filename
    return None


def read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes, its CRC-32 checked by zipfile -- unless the archive records no
    checksums at all (:func:`records_checksums`), where zipfile would report every member
    as corrupt."""
    with archive.open(name) as member:
        if not records_checksums(archive):
            member._expected_crc = None  # zipfile's own switch for "no CRC to compare"
        return member.read()
