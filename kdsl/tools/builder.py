"""Fill every sample's feature fields: dialogue text from turns, OCR text and visual labels from images."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from kdsl._internal.hashing import sha256_file
from kdsl.data.sample import Dataset, Sample
from kdsl.errors import FeatureError
from kdsl.tools.features import SEPARATOR, FeatureTable, SampleFeatures, dialogue_fields
from kdsl.tools.layout import image_size, layout_of
from kdsl.tools.ocr import OcrTool
from kdsl.tools.visual import VisualLabeler

logger = logging.getLogger(__name__)


class ImageFailure(BaseModel):
    """An image no tool could read, and the samples that showed it."""

    model_config = ConfigDict(frozen=True)

    path: str
    sample_ids: tuple[str, ...]
    reason: str


class BuildReport(BaseModel):
    """What a feature build did, per distinct image file."""

    model_config = ConfigDict(frozen=True)

    samples: int = 0
    images: int = 0
    computed: int = 0
    cached: int = 0
    failures: tuple[ImageFailure, ...] = ()

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        return (
            f"{self.samples} samples, {self.images} images: {self.computed} computed, {self.cached} cached, "
            f"{self.failed} failed"
        )


class _ImageFeatures(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str = ""
    title: str = ""
    bottom: str = ""
    labels: tuple[tuple[str, float], ...] = ()


class FeatureBuilder:
    """Builds a FeatureTable; after `build`, `report_` says what was computed, cached and skipped.

    Each distinct image file is hashed and processed once, however many samples show it. Results go to the
    tools' caches as soon as each image is done, so an interrupted or failed build loses nothing already run.

    Args:
        ocr: fills `image_text`; None leaves it empty.
        labeler: fills `image_labels`; None leaves it empty.
        progress: show a rich progress bar over images.
        skip_errors: record an unreadable image in `report_.failures` and leave its fields empty, instead of
            raising FeatureError.
    """

    def __init__(
        self,
        *,
        ocr: OcrTool | None,
        labeler: VisualLabeler | None,
        progress: bool = True,
        skip_errors: bool = False,
    ):
        self.ocr = ocr
        self.labeler = labeler
        self.progress = progress
        self.skip_errors = skip_errors

    def build(self, dataset: Dataset | Iterable[Sample]) -> FeatureTable:
        samples = list(dataset.samples if isinstance(dataset, Dataset) else dataset)
        users: dict[str, list[str]] = {}  # image path -> ids of the samples that show it, in order
        for s in samples:
            for img in s.images:
                users.setdefault(img, []).append(s.id)

        per_image, counts, failures = self._process(users)
        rows = [self._row(s, per_image) for s in samples]
        self.report_ = BuildReport(
            samples=len(samples),
            images=len(users),
            computed=counts["computed"],
            cached=counts["cached"],
            failures=tuple(failures),
        )
        logger.info("features: %s", self.report_.summary())
        for f in failures:
            logger.warning("skipped image %s (samples %s): %s", f.path, ", ".join(f.sample_ids), f.reason)
        return FeatureTable(rows)

    def _process(
        self, users: dict[str, list[str]]
    ) -> tuple[dict[str, _ImageFeatures], dict[str, int], list[ImageFailure]]:
        from kdsl._internal.progress import progress

        per_image: dict[str, _ImageFeatures] = {}
        by_hash: dict[str, _ImageFeatures] = {}  # identical files under two names run once, cache or not
        counts = {"computed": 0, "cached": 0}
        failures: list[ImageFailure] = []
        with progress(disable=not self.progress or not users, info_field="detail") as bar:
            task = bar.add_task("image features", total=len(users), detail="")
            for path, sample_ids in users.items():
                try:
                    digest = sha256_file(path)
                    if digest in by_hash:
                        per_image[path] = by_hash[digest]
                        counts["cached"] += 1
                    else:
                        before = self._calls()
                        per_image[path] = by_hash[digest] = self._one(path, digest)
                        counts["computed" if self._calls() > before else "cached"] += 1
                except FeatureError as e:
                    if not self.skip_errors:
                        more = f" (and {len(sample_ids) - 1} more)" if len(sample_ids) > 1 else ""
                        raise FeatureError(
                            f"sample {sample_ids[0]!r}{more}: {e}; to go on with its image features left empty: "
                            "`kdsl features build --skip-errors` (skip_errors=True in Python)"
                        ) from e
                    failures.append(ImageFailure(path=path, sample_ids=tuple(sample_ids), reason=str(e)))
                bar.update(
                    task,
                    advance=1,
                    detail=f"{counts['computed']} run, {counts['cached']} cached, {len(failures)} failed",
                )
        return per_image, counts, failures

    def _calls(self) -> int:
        return (self.ocr.calls if self.ocr else 0) + (self.labeler.calls if self.labeler else 0)

    def _one(self, path: str, digest: str) -> _ImageFeatures:
        text = title = bottom = ""
        if self.ocr:
            lines = self.ocr.lines(path, sha256=digest)
            text = SEPARATOR.join(ln.text for ln in lines)
            if lines:
                layout = layout_of(lines, *image_size(path))
                title, bottom = layout.title, layout.bottom
        labels: tuple[tuple[str, float], ...] = ()
        if self.labeler:
            result = self.labeler(path, sha256=digest)
            labels = tuple(zip(result.labels, result.scores, strict=True))
        return _ImageFeatures(text=text, title=title, bottom=bottom, labels=labels)

    @staticmethod
    def _row(sample: Sample, per_image: dict[str, _ImageFeatures]) -> SampleFeatures:
        found = [per_image[p] for p in sample.images if p in per_image]  # failed images are absent
        best: dict[str, float] = {}
        for f in found:
            for label, score in f.labels:
                best[label] = max(score, best.get(label, 0.0))
        return SampleFeatures(
            sample_id=sample.id,
            **dialogue_fields(sample),
            image_text=SEPARATOR.join(f.text for f in found if f.text),
            image_title=SEPARATOR.join(f.title for f in found if f.title),
            image_bottom=SEPARATOR.join(f.bottom for f in found if f.bottom),
            # Union over the sample's images, best score first; ties keep first-seen order (sorted is stable).
            image_labels=tuple(sorted(best, key=lambda label: -best[label])),
        )


def build_features(
    dataset: Dataset | Iterable[Sample],
    *,
    ocr: OcrTool | None,
    labeler: VisualLabeler | None,
    progress: bool = True,
    skip_errors: bool = False,
) -> FeatureTable:
    """Features of every sample; see FeatureBuilder (use it directly to read the build report).

    Raises:
        FeatureError: an image cannot be read, naming the sample and the file (unless `skip_errors`).
    """
    builder = FeatureBuilder(ocr=ocr, labeler=labeler, progress=progress, skip_errors=skip_errors)
    return builder.build(dataset)
