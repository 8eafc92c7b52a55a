"""Convert a GGUF causal LM once into a transformers safetensors folder (for transformers, peft and vLLM)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from kdsl.errors import ModelError

logger = logging.getLogger(__name__)

_DTYPES = ("float32", "bfloat16", "float16")


def convert_gguf(gguf: Path, out: Path, dtype: str = "float32", source: dict[str, Any] | None = None) -> Path:
    """Dequantize `gguf` with transformers and save model, tokenizer and chat template as safetensors in `out`.

    transformers loads GGUF (`gguf_file=`) but refuses to `save_pretrained` the result, so the model is rebuilt
    from its config without the quantization entry and the dequantized state dict copied in. The folder is built
    under a temporary name and renamed at the end: an interrupted conversion leaves no half folder.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    if out.exists():
        raise ModelError(f"{out} already exists; delete it to convert {gguf.name} again")
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ModelError("converting a GGUF needs transformers, gguf and torch: pip install transformers gguf") from e

    start = time.perf_counter()
    logger.info("converting %s to a transformers folder (once; this takes a while)", gguf)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        folder, name = str(gguf.parent), gguf.name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        except (ValueError, KeyError, OSError, RuntimeError) as e:
            raise ModelError(f"transformers cannot read {gguf} ({e}); only GGUF architectures transformers "
                             f"supports can be converted") from e
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        # Tied output embeddings may be absent from one side; anything else means the rebuild is wrong.
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise ModelError(f"converting {gguf}: rebuilt model does not match the GGUF weights "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.generation_config = quantized.generation_config
        del quantized
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        import transformers

        (tmp / "kdsl_source.json").write_text(json.dumps(
            {"gguf": gguf.name, "dtype": dtype, "transformers_version": transformers.__version__, **(source or {})},
            indent=2) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)
    return out
