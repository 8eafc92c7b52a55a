"""Decoding image files for the feature tools."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kdsl.errors import FeatureError

if TYPE_CHECKING:
    from PIL.Image import Image


def open_rgb(path: str | Path) -> Image:
    """Decode an image fully as RGB (transparency flattened onto white).

    Raises FeatureError naming the file and the reason when it is missing, truncated or not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not inside the model
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                # Screenshots with alpha would otherwise turn transparent areas black and hide dark text.
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise FeatureError(f"{path}: image file not found") from e
    except UnidentifiedImageError as e:
        raise FeatureError(f"{path}: not a readable image (unknown or corrupt format)") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # PIL reports truncated or malformed data as OSError/ValueError/SyntaxError depending on the codec.
        raise FeatureError(f"{path}: cannot decode image ({e})") from e
