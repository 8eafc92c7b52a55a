"""Base64 images from a request: decoded, checked (size, pixels, format, integrity) and written to a temp folder.

The feature tools read image files, keyed by the hash of their content, so a picture sent twice is read once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from pathlib import Path

from kdsl.serve.errors import ApiError
from kdsl.serve.limits import ServeLimits

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


def decode_image(text: str, limits: ServeLimits, *, item: int, index: int) -> tuple[bytes, str]:
    """The image's bytes and file suffix, or ApiError (413 image_too_large, 422 invalid_image)."""
    from PIL import Image, UnidentifiedImageError

    where = f"image {index}"
    text = _DATA_URL.sub("", text, count=1).strip()
    # 4 base64 characters carry 3 bytes: refuse before decoding what cannot fit.
    if len(text) // 4 * 3 > limits.max_image_bytes + 3:
        raise ApiError(413, "image_too_large", f"{where} is over {limits.max_image_bytes} bytes", item=item)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, "invalid_image", f"{where} is not valid base64 ({e})", item=item) from None
    if not data:
        raise ApiError(422, "invalid_image", f"{where} is empty", item=item)
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, "image_too_large", f"{where} is {len(data)} bytes, over {limits.max_image_bytes}",
                       item=item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                fmt, (width, height) = im.format, im.size
                if fmt not in FORMATS:
                    raise ApiError(422, "invalid_image", f"{where} is {fmt or 'of an unknown format'}; send "
                                   f"{', '.join(FORMATS)}", item=item)
                if width * height > limits.max_image_pixels:
                    raise ApiError(413, "image_too_large", f"{where} has {width}x{height} pixels, over "
                                   f"{limits.max_image_pixels}", item=item)
                im.verify()  # structure and checksums, without decoding the pixels
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # a truncated file fails here, not in the OCR later
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise ApiError(422, "invalid_image", f"{where} is not a readable image (unknown or corrupt format)",
                       item=item) from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise ApiError(422, "invalid_image", f"{where} cannot be decoded ({e})", item=item) from None
    return data, FORMATS[fmt]


def write_image(data: bytes, suffix: str, folder: Path) -> str:
    """Write the bytes under their content hash; returns the path."""
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)
