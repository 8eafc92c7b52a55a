"""transformers backend for image-text models (Qwen2-VL and alike): generation and label scoring with images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdsl.errors import ModelError
from kdsl.models.base import Generation, Message
from kdsl.models.hf import HFBackend

logger = logging.getLogger(__name__)


class HFVisionBackend(HFBackend):
    """A Qwen2-VL-style image-text model (Qwen2-VL, Qwen2.5-VL) loaded with `AutoModelForImageTextToText`.

    Images (PIL images or file paths) go with the last user message, before its text. Inputs are built from
    the tokenizer's chat template and the image processor directly: transformers' `Qwen2VLProcessor` also
    builds a video processor, which needs torchvision, and the PyPI torchvision does not import against the
    CPU torch build. Each image's single `<|image_pad|>` is expanded to one token per merged patch, as the
    processor does. Label scoring shares the prompt's KV cache (image included) across labels.
    """

    name = "hf_vision"
    supports_images = True
    packs_labels = False  # M-RoPE positions are not plain offsets after the prompt
    supports_schema = False

    def _load(self, location: str, dtype: Any, local_files_only: bool) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_files_only)
        self.image_processor = AutoImageProcessor.from_pretrained(location, local_files_only=local_files_only)
        self.model = AutoModelForImageTextToText.from_pretrained(location, dtype=dtype,
                                                                 local_files_only=local_files_only)
        config = self.model.config
        self._image_token = self.tokenizer.convert_ids_to_tokens(config.image_token_id)

    def _chat_inputs(self, messages: Sequence[Message], images: list[Any]) -> dict[str, Any]:
        import torch

        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"{self._resolved.name} has no chat template")
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if images and not users:
            raise ValueError("images go with a user message, and there is none")
        conversation = []
        for i, message in enumerate(messages):
            content: list[dict[str, Any]] = []
            if users and i == users[-1]:
                content.extend({"type": "image"} for _ in images)
            content.append({"type": "text", "text": message.content})
            conversation.append({"role": message.role, "content": content})
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs: dict[str, Any] = {}
        if images:
            pixels = self.image_processor(images=[_as_image(x) for x in images], return_tensors="pt")
            grids = pixels["image_grid_thw"]
            if text.count(self._image_token) != len(images):
                raise ModelError(f"the chat template wrote {text.count(self._image_token)} image placeholders "
                                 f"for {len(images)} images; this model's template is not Qwen2-VL-style")
            merge = self.image_processor.merge_size ** 2
            pieces = text.split(self._image_token)
            text = pieces[0] + "".join(self._image_token * int(g.prod() // merge) + rest
                                       for g, rest in zip(grids, pieces[1:], strict=True))
            inputs.update(pixel_values=pixels["pixel_values"], image_grid_thw=grids)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        # Modality of each token (0 text, 1 image): Qwen2-VL builds its 3-D rotary positions from it.
        inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids),
                      mm_token_type_ids=(ids == self.model.config.image_token_id).long())
        return {k: v.to(self._device) for k, v in inputs.items()}

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        schema: Any = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Generation:
        self._forget_positions()
        return super().generate(messages, images=images, schema=schema, max_tokens=max_tokens,
                                temperature=temperature, seed=seed)


def _as_image(value: Any) -> Any:
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (str, Path)):
        try:
            with Image.open(value) as image:
                return image.convert("RGB")
        except OSError as e:
            raise ModelError(f"cannot read image {value}: {e}") from e
    raise TypeError(f"an image must be a PIL image or a path, got {type(value).__name__}")
