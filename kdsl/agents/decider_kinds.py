"""Decider kinds, registered by name like the model backends: how to load a trained decider folder of each kind.

- `features` (the CPU default): linear heads over n-grams, multilingual-e5 and EfficientNet embeddings, weighed
  and calibrated by cross-validation (kdsl.agents.feature_decider). Fits in about a minute on two cores.
- `lora`: the paper's path, a LoRA-post-trained language model scored by label likelihood (kdsl.agents.decider);
  its adapter is what vLLM serves. Worth it on a GPU or with a user's own (M)LLM.

Every decider answers `predict(samples, features, progress) -> list[LabelDistribution]` and carries a `card`
(`DeciderCard`) and a `calibration`; the evaluation, the arbiter and the server read nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from kdsl.agents.decider import CARD, Calibration, Decider, DeciderCard, LabelDistribution
from kdsl.agents.decider_blocks import Encoders
from kdsl.agents.feature_decider import KIND as FEATURES
from kdsl.agents.feature_decider import FeatureDecider
from kdsl.data.sample import Sample
from kdsl.errors import ConfigError, ModelError
from kdsl.tools.features import FeatureTable, SampleFeatures

if TYPE_CHECKING:
    from kdsl.config import Settings

LORA = "lora"
DEFAULT_KIND = FEATURES


class DeciderModel(Protocol):
    """What every decider kind offers the rest of kdsl."""

    card: DeciderCard
    calibration: Calibration
    folder: Path | None

    def predict(self, samples: Sequence[Sample], features: FeatureTable | dict[str, SampleFeatures],
                progress: Callable[[int], None] | None = None) -> list[LabelDistribution]: ...

    def close(self) -> None: ...


class DeciderKind(NamedTuple):
    name: str
    description: str
    load: Callable[..., Any]  # (folder, settings, **options) -> DeciderModel


_KINDS: dict[str, DeciderKind] = {}


def register_decider_kind(name: str, load: Callable[..., Any], description: str) -> None:
    """Make a decider kind loadable by name (a folder's card names its kind)."""
    _KINDS[name] = DeciderKind(name=name, description=description, load=load)


def decider_kinds() -> dict[str, DeciderKind]:
    return dict(_KINDS)


GEMMA_PACK = "embeddinggemma-300m"


def default_encoders(settings: Settings, *, images: bool = True, threads: int | None = None,
                     gemma: bool | None = None) -> Encoders:
    """The frozen text and image models of the `features` kind, behind KDSL_HOME's feature cache. EmbeddingGemma
    joins when `gemma` (default: KDSL_GEMMA) asks for it; its pack must be pulled (a `ModelError` says how)."""
    from kdsl.tools.cache import FeatureCache
    from kdsl.tools.embeddings import TextEmbedder
    from kdsl.tools.pipeline import CACHE_FILE
    from kdsl.tools.visual import VisualLabeler

    cache = FeatureCache(settings.cache_dir / CACHE_FILE)
    sentence = None
    if settings.gemma if gemma is None else gemma:
        from kdsl.models import pack_path
        from kdsl.tools.gemma_embedder import GemmaEmbedder

        sentence = GemmaEmbedder(pack_path(GEMMA_PACK, settings), cache, threads=threads)
    return Encoders(TextEmbedder(cache, threads=threads), VisualLabeler(cache) if images else None, sentence)


def card_kind(folder: Path) -> str:
    """The kind a decider folder's card names (`lora` for folders written before kinds existed)."""
    try:
        return str(json.loads((folder / CARD).read_text(encoding="utf-8")).get("kind") or LORA)
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder / CARD}: cannot read the decider card ({e})") from e


def load_decider(folder: Path, settings: Settings, **options: Any) -> Any:
    """Load a trained decider folder of any registered kind. `options` go to the kind's loader."""
    kind = card_kind(folder)
    if kind not in _KINDS:
        raise ConfigError(f"{folder}: decider kind {kind!r} is not known here; kinds: {', '.join(_KINDS)}")
    return _KINDS[kind].load(folder, settings, **options)


def _load_lora(folder: Path, settings: Settings, **options: Any) -> Decider:
    return Decider.load(folder, settings, **options)


def _load_features(folder: Path, settings: Settings, *, threads: int | None = None, **_: Any) -> FeatureDecider:
    card = DeciderCard.load(folder)
    used = card.training.get("encoders", {})
    # The encoders it was fitted with, whatever KDSL_GEMMA says now.
    return FeatureDecider.load(folder, default_encoders(settings, images="image" in used, threads=threads,
                                                        gemma="gemma" in used))


register_decider_kind(FEATURES, _load_features, "linear heads over n-grams, e5 and image embeddings (CPU, minutes)")
register_decider_kind(LORA, _load_lora, "LoRA-post-trained language model scored by label likelihood (GPU, vLLM)")
