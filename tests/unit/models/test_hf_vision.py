"""The image path of the transformers backend, through a tiny randomly initialised Qwen2-VL built here (no
Qwen2-VL weights exist offline): generation and label scoring with an image."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdsl.models import Message, ModelBackend, ModelError, load_backend

pytestmark = pytest.mark.slow

WORDS = ("system user assistant you are a helpful what is in the picture cat dog photo yes no red blue describe "
         "it answer with one word : , . ?").split()
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}{% else %}"
    "{% for c in m.content %}{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(folder: Path) -> Path:
    """A 2-layer Qwen2-VL with a word-level tokenizer and Qwen2-VL's image processor, saved like a real one."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {t: i for i, t in enumerate([*SPECIALS, "<unk>", "\n", *sorted(set(WORDS))])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.WhitespaceSplit()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", additional_special_tokens=SPECIALS[1:])
    fast.chat_template = TEMPLATE
    ids = {t: vocab[t] for t in SPECIALS}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            # head_dim 16: the three rotary sections (time, height, width) split its 8 frequencies.
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> ModelBackend:
    pytest.importorskip("transformers")
    folder = build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_qwen2_vl"))
    with load_backend(f"hf_vision:{folder}") as backend:
        yield backend


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "noise.png"
    Image.fromarray((np.random.default_rng(0).random((80, 100, 3)) * 255).astype("uint8")).save(path)
    return path


QUESTION = [Message(role="user", content="what is in the picture ?")]


def test_generates_with_an_image(vision: ModelBackend, image_file: Path) -> None:
    with_image = vision.generate(QUESTION, images=[image_file], max_tokens=4)
    without = vision.generate(QUESTION, max_tokens=4)
    assert with_image.completion_tokens > 0
    # The image expands to one token per merged patch: 80x100 px -> a 6x8 patch grid -> 12 tokens (+2 markers).
    assert with_image.prompt_tokens == without.prompt_tokens + 12 + 2


def test_image_changes_label_scores_and_cache_matches_full_passes(vision, image_file: Path) -> None:
    import torch

    labels = ["cat", "dog photo", "red blue cat"]
    seen = vision.score_labels(QUESTION, labels, images=[image_file])
    blind = vision.score_labels(QUESTION, labels)
    assert seen.scores != pytest.approx(blind.scores)
    inputs = vision._chat_inputs(QUESTION, [image_file])
    prompt_len = inputs["input_ids"].shape[1]
    for label in labels[1:]:
        ids = torch.cat([inputs["input_ids"], torch.tensor([vision.label_ids(label)])], dim=1)
        full = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids),
                "mm_token_type_ids": (ids == vision.model.config.image_token_id).long()}
        vision._forget_positions()
        with torch.inference_mode():
            logprobs = torch.log_softmax(vision.model(**full).logits[0].float(), dim=-1)
        expected = sum(float(logprobs[i - 1, ids[0, i]]) for i in range(prompt_len, ids.shape[1]))
        assert seen.scores[label] == pytest.approx(expected, abs=1e-3)


def test_misuse_is_refused(vision: ModelBackend, image_file: Path) -> None:
    with pytest.raises(ValueError):
        vision.score_labels("what is in the picture ?", ["cat"], images=[image_file])
    with pytest.raises(ModelError):
        vision.generate(QUESTION, images=[image_file], schema={"type": "object"})
