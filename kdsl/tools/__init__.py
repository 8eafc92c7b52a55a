"""Feature tools: what a rule or a text-only model sees of a sample (dialogue text, OCR, visual labels) and
text embeddings, all cached on disk by content hash. Models load on first use."""

from __future__ import annotations

from kdsl.tools.builder import BuildReport, FeatureBuilder, ImageFailure, build_features
from kdsl.tools.cache import FeatureCache
from kdsl.tools.embeddings import TextEmbedder
from kdsl.tools.features import FIELDS, FeatureTable, FieldName, SampleFeatures, dialogue_fields
from kdsl.tools.ocr import OcrResult, OcrTool
from kdsl.tools.visual import VisualLabeler, VisualResult, imagenet_classes

__all__ = [
    "FIELDS",
    "BuildReport",
    "FeatureBuilder",
    "FeatureCache",
    "FeatureTable",
    "FieldName",
    "ImageFailure",
    "OcrResult",
    "OcrTool",
    "SampleFeatures",
    "TextEmbedder",
    "VisualLabeler",
    "VisualResult",
    "build_features",
    "dialogue_fields",
    "imagenet_classes",
]
