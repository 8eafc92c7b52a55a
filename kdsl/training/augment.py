"""Light augmentation for few-shot post-training: drop some dialogue and OCR lines, never all of them."""

from __future__ import annotations

import random

from kdsl.tools.features import SEPARATOR, SampleFeatures


def _drop_lines(text: str, p: float, rng: random.Random) -> str:
    lines = text.split(SEPARATOR)
    if len(lines) < 2 or p <= 0:
        return text
    kept = [line for line in lines if rng.random() >= p]
    # The last line carries the current request (or the first OCR block): keep at least it.
    return SEPARATOR.join(kept) if kept else lines[-1]


def augment(features: SampleFeatures, p: float, rng: random.Random) -> SampleFeatures:
    """A copy of `features` with each user / agent / OCR line dropped with probability `p`."""
    if p <= 0:
        return features
    return features.model_copy(update={
        "user_text": _drop_lines(features.user_text, p, rng),
        "agent_text": _drop_lines(features.agent_text, p, rng),
        "image_text": _drop_lines(features.image_text, p, rng),
    })
