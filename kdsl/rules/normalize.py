"""One text normalisation for rule terms and sample fields, so a rule matches however the text was typed."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace other than newlines (newlines separate turns and OCR lines)


def normalize(text: str) -> str:
    """NFKC (full-width -> half-width, compatibility forms), case-folded, inner spaces collapsed, trimmed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", text).strip()
