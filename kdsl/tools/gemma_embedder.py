"""Text embeddings from EmbeddingGemma-300M through sentence-transformers: optional, for the features decider.

Measured by `benchmarks/quality.py --datasets banking77 clinc150 --shots 10 --gemma` (3 seeds, official test sets):
the features decider with these blocks is right on 0.926 (Banking77) and 0.914 (CLINC150) of the queries, without
them on 0.823 and 0.843. On MDSIRC's Chinese text it measured no better than e5 inside the decider. Its weights
come from an unofficial upload (see `kdsl models list`), pulled as the `embeddinggemma-300m` pack and checked by
hash, so it stays opt-in (KDSL_GEMMA=1).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdsl._internal.hashing import sha256_file, sha256_text
from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache

TOOL = "gemma-embed"
# The zip holds one sentence-transformers folder; its weights' hash is checked once, when it is unpacked.
FOLDER, WEIGHTS = "model_download", "model.safetensors"
WEIGHTS_SHA256 = "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"
VERSION = f"embeddinggemma-300m@{WEIGHTS_SHA256[:12]};classification"
# EmbeddingGemma reads a task prompt before the text; "classification" is the one for label prediction.
PROMPT = "task: classification | query: "
DIM = 768


def unpack(archive: Path) -> Path:
    """The sentence-transformers folder of the pack's zip, unpacked beside it on first use and checked by hash."""
    target = archive.parent / "st"
    if (target / FOLDER / WEIGHTS).is_file():
        return target / FOLDER
    partial = archive.parent / f".st.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(partial)  # our own pinned archive (sha256 checked at pull), not user input
        got = sha256_file(partial / FOLDER / WEIGHTS)
        if got != WEIGHTS_SHA256:
            raise FeatureError(f"{archive}: the EmbeddingGemma weights hash to {got}, expected {WEIGHTS_SHA256}; "
                               "delete the pack folder and pull it again")
        os.replace(partial, target)
    except (zipfile.BadZipFile, OSError) as e:
        raise FeatureError(f"{archive}: cannot unpack EmbeddingGemma ({e}); delete the pack folder and run "
                           "`kdsl models pull embeddinggemma-300m` again") from e
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target / FOLDER


class GemmaEmbedder:
    """L2-normalised EmbeddingGemma embeddings, cached per text in the feature cache (same interface as
    `TextEmbedder`: `version`, `dim`, `embed(texts, kind)`).

    Args:
        archive: the pulled pack's zip (`kdsl models pull embeddinggemma-300m`).
        cache: the feature cache; None computes every time.
        threads: torch threads (None: torch's default).
    """

    def __init__(self, archive: Path, cache: FeatureCache | None = None, *, threads: int | None = None,
                 batch_size: int = 16):
        self.archive = Path(archive)
        self.cache = cache
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def version(self) -> str:
        return VERSION

    @property
    def dim(self) -> int:
        return DIM

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise FeatureError("EmbeddingGemma needs sentence-transformers: `pip install "
                                   "sentence-transformers` (make install has it)") from e
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            self._model = SentenceTransformer(str(unpack(self.archive)), device="cpu", local_files_only=True)
        return self._model

    def embed(self, texts: Sequence[str], kind: str = "query") -> np.ndarray:
        """(n, 768) float32, each row of unit length. `kind` is accepted for `TextEmbedder` parity; the prompt is
        the classification one either way."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        keys = [sha256_text(PROMPT + t) for t in texts]
        found = self.cache.get_many(TOOL, VERSION, keys) if self.cache is not None else {}
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            vecs = self._load().encode([PROMPT + t for t in todo.values()], batch_size=self.batch_size,
                                       normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
            new = {k: np.asarray(v, dtype=np.float32) for k, v in zip(todo, vecs, strict=True)}
            if self.cache is not None:
                self.cache.put_many(TOOL, VERSION, new)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
