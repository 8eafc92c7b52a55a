"""Where the words are on a screenshot: the title band at the top and the bar of buttons at the bottom.

A flat bag of OCR text blurs what separates many screen classes: a page titled 退款详情 whose body talks about 寄回
is a refund page, one titled 退货退款详情 a return page. The title band and the bottom bar, kept as fields of their own,
let rules and the decider weigh them apart from the body.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kdsl.tools.ocr import OcrLine

# Band limits as fractions of the image height, measured on the line's vertical centre. The phone status bar
# (time, battery) sits in the top 4% and lands in the title band; its digits carry no class signal and cost little.
TITLE_BAND = 0.16
BOTTOM_BAND = 0.88
LAYOUT_VERSION = f"title<{TITLE_BAND},bottom>{BOTTOM_BAND}"


class ImageLayout(BaseModel):
    """The text of an image's title band and bottom bar, and how much text it holds."""

    model_config = ConfigDict(frozen=True)

    title: str = ""
    bottom: str = ""
    lines: int = 0
    text_area: float = 0.0  # share of the image covered by text boxes, 0..1


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from the file header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def layout_of(lines: Sequence[OcrLine], width: float, height: float) -> ImageLayout:
    """The layout of one image from its OCR lines (in reading order) and its size in pixels."""
    if not lines or width <= 0 or height <= 0:
        return ImageLayout()

    def centre(line: OcrLine) -> float:
        return (line.box[1] + line.box[3]) / 2 / height

    area = sum(max(0.0, ln.box[2] - ln.box[0]) * max(0.0, ln.box[3] - ln.box[1]) for ln in lines)
    return ImageLayout(
        title="\n".join(ln.text for ln in lines if centre(ln) < TITLE_BAND),
        bottom="\n".join(ln.text for ln in lines if centre(ln) > BOTTOM_BAND),
        lines=len(lines),
        text_area=min(1.0, area / (width * height)),
    )
