"""Content hashes: the keys of the feature cache, the model packs' checks and the trace's input digests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kdsl.errors import FeatureError


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes. Raises FeatureError naming the file when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk_size):
                h.update(block)
    except OSError as e:
        raise FeatureError(f"{path}: cannot read file ({e.strerror or e})") from e
    return h.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest(value: Any) -> str:
    """A short, stable digest of an input (text, or anything JSON can write), to tell prompts apart."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return sha256_text(text)[:16]
