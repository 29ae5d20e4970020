"""Images from outside, decoded only after their declared size is checked.

Every image the project decodes (training and evaluation sets, the pre-flight check, search
galleries and queries, HTML thumbnails, uploads to the web service) goes through
:func:`decode_rgb` or :func:`check_image`.  PIL reads the header first (``Image.open``
decodes no pixel); an image declaring more than ``limits.MAX_IMAGE_PIXELS`` pixels is then
refused before its pixels are decoded.  PIL's own guard only *warns* up to 89 megapixels and
raises ``DecompressionBombError`` (not an OSError) above 179, which used to escape the
callers' error handling as a traceback; both are turned into one reason here.

Reasons never show the source object (a PIL message about an upload reads "cannot identify
image file <_io.BytesIO object at 0x...>"): the caller names the file or upload.
"""

import struct
import warnings
from typing import Tuple

from reid_srdl.core import limits
from reid_srdl.core.errors import ReidSrdlError

UNIDENTIFIED = "cannot identify image file (not a format PIL reads)"
# What PIL's decoders raise on a damaged or crafted file (not only OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, struct.error)


class ImageRejected(ReidSrdlError, ValueError):
    """An image is refused or undecodable; ``reason`` says why without naming the source."""

    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.reason, self.too_large = reason, too_large


def _too_large(width: int, height: int) -> ImageRejected:
    return ImageRejected(
        f"{width} x {height} = {width * height:,} pixels is over the limit of {limits.MAX_IMAGE_PIXELS:,} "
        f"(reid_srdl.core.limits.MAX_IMAGE_PIXELS), as a decompression bomb's is",
        too_large=True,
    )


def _reason(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return text[:200] or type(e).__name__


def _open(source):
    """``Image.open`` (header only) with PIL's bomb warning silenced and its bomb error,
    like any undecodable file, as :class:`ImageRejected`; the size is checked here."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError:
        raise ImageRejected(
            f"it declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, over the limit of "
            f"{limits.MAX_IMAGE_PIXELS:,} (reid_srdl.core.limits.MAX_IMAGE_PIXELS), as a decompression bomb does",
            too_large=True,
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(UNIDENTIFIED) from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise  # the caller names the path
    except _DECODE_ERRORS as e:
        raise ImageRejected(_reason(e)) from None
    if image.width * image.height > limits.MAX_IMAGE_PIXELS:
        image.close()
        raise _too_large(image.width, image.height)
    return image


def decode_rgb(source):
    """The RGB PIL image at ``source`` (a path or a binary file object), fully decoded.

    Raises :class:`ImageRejected` (over the pixel limit, not an image, truncated...);
    FileNotFoundError / IsADirectoryError come through as they are, for the caller to name.
    """
    from PIL import Image

    image = _open(source)
    try:
        with image, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # convert() decodes every pixel now, so a truncated file fails here.
            return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageRejected(_reason(e), too_large=True) from None
    except _DECODE_ERRORS as e:
        raise ImageRejected(_reason(e)) from None


def check_image(source) -> Tuple[int, int]:
    """``(width, height)`` of an image whose header decodes and whose size is within the
    limit, without decoding its pixels (PIL's ``verify``: a file cut inside its pixel data
    still passes).  Raises like :func:`decode_rgb`."""
    from PIL import Image

    image = _open(source)
    try:
        with image, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = image.size
            image.verify()
            return size
    except Image.DecompressionBombError as e:
        raise ImageRejected(_reason(e), too_large=True) from None
    except _DECODE_ERRORS as e:
        raise ImageRejected(_reason(e)) from None
