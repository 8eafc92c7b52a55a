"""Checks every loader shares, and the collector that either raises or skips-and-counts bad items."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from kdsl.data.sample import InvalidItem, Sample
from kdsl.errors import DataError


class Collector:
    """Raises on the first invalid item, or (skip_invalid) records it so the loader can go on."""

    def __init__(self, path: str | Path, *, skip_invalid: bool):
        self.path = str(path)
        self.skip_invalid = skip_invalid
        self.items: list[InvalidItem] = []

    def reject(self, code: str, reason: str, sample_id: str | None = None) -> None:
        if not self.skip_invalid:
            raise DataError(reason, path=self.path, sample_id=sample_id, code=code, skippable=True)
        self.items.append(InvalidItem(path=self.path, sample_id=sample_id, code=code, reason=reason))

    def counts(self) -> Counter[str]:
        return Counter(i.code for i in self.items)


def image_problem(path: str) -> tuple[str, str] | None:
    """(code, reason) when the image is missing or cannot be decoded, else None."""
    p = Path(path)
    if not p.is_file():
        return "missing_image", f"image file {path} does not exist"
    try:
        with Image.open(p) as im:
            im.verify()
            fmt = im.format
    except Image.DecompressionBombError as e:
        return "image_too_large", f"image file {path} is too large to decode ({e})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return "corrupt_image", f"image file {path} cannot be decoded ({e})"
    if fmt == "JPEG" and not _ends_like_a_jpeg(p):
        # verify() reads only a JPEG's header; a file cut short (a failed copy or download) passes it and fails
        # later, in OCR. A whole JPEG ends with the end-of-image marker (some writers pad a few bytes after it).
        return "corrupt_image", f"image file {path} is cut short (no JPEG end-of-image marker)"
    return None


def _ends_like_a_jpeg(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        return b"\xff\xd9" in f.read()


def validate_samples(
    samples: list[Sample],
    label_spaces: dict[str, tuple[str, ...]],
    collector: Collector,
    *,
    check_images: bool = True,
) -> list[Sample]:
    """The samples that pass the shared checks: unique id, not empty, label among its candidates, images readable."""
    seen: set[str] = set()
    kept = []
    for s in samples:
        if s.id in seen:
            collector.reject("duplicate_id", f"id {s.id!r} appears more than once", s.id)
            continue
        seen.add(s.id)
        if s.is_empty:
            collector.reject("empty_dialogue", "the dialogue has no text and no image", s.id)
            continue
        allowed = s.candidates or label_spaces.get(s.task, ())
        if s.label is not None and s.label not in allowed:
            collector.reject(
                "unknown_label", f"label {s.label!r} is not among the {len(allowed)} candidate labels", s.id
            )
            continue
        problem = next((pr for pr in map(image_problem, s.images) if pr), None) if check_images else None
        if problem:
            collector.reject(problem[0], problem[1], s.id)
            continue
        kept.append(s)
    return kept
