"""The default feature pipeline: OCR + visual labels behind one shared cache under KDSL_HOME."""

from __future__ import annotations

from kdsl.config import Settings
from kdsl.tools.builder import FeatureBuilder
from kdsl.tools.cache import FeatureCache
from kdsl.tools.ocr import OcrTool
from kdsl.tools.visual import VisualLabeler

CACHE_FILE = "features.sqlite"


def default_builder(
    settings: Settings, *, progress: bool = True, skip_errors: bool = False, images: bool = True
) -> FeatureBuilder:
    """A FeatureBuilder whose tools share `<KDSL_HOME>/cache/features.sqlite`.

    `images=False` leaves image_text and image_labels empty (text-only data, or a quick look). The OCR engine is
    `settings.ocr_engine` (KDSL_OCR_ENGINE).
    """
    cache = FeatureCache(settings.cache_dir / CACHE_FILE)
    return FeatureBuilder(
        ocr=OcrTool(cache, engine=settings.ocr_engine) if images else None,
        labeler=VisualLabeler(cache) if images else None,
        progress=progress,
        skip_errors=skip_errors,
    )
