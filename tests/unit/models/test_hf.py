"""The transformers backend on SmolLM2 converted from its GGUF: generation, label scoring, agreement with
llama.cpp, and a peft adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdsl.config import Settings
from kdsl.models import Message, ModelBackend, ModelError, hf_path

pytestmark = pytest.mark.slow

SMOLLM2 = "smollm2-135m-instruct"


def test_conversion_is_cached_with_its_source(hf: ModelBackend, models_settings: Settings) -> None:
    folder = hf_path(SMOLLM2, models_settings)
    assert hf.info.path == str(folder) and hf.info.pack == SMOLLM2
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    source = json.loads((folder / "kdsl_source.json").read_text())
    assert source["sha256"] == hf.info.sha256
    assert not list(folder.parent.glob(".*partial*"))


def test_generates_text_and_counts_usage(hf: ModelBackend) -> None:
    before = hf.usage.snapshot()
    out = hf.generate([Message(role="user", content="What is the capital of France?")], max_tokens=12)
    assert "Paris" in out.text
    assert out.prompt_tokens > 5 and 0 < out.completion_tokens <= 12
    assert hf.usage.since(before).calls == 1


def test_seeded_sampling_repeats(hf: ModelBackend) -> None:
    chat = [Message(role="user", content="Write one word about the sea.")]
    a = hf.generate(chat, max_tokens=6, temperature=1.0, seed=11)
    b = hf.generate(chat, max_tokens=6, temperature=1.0, seed=11)
    assert a.text == b.text


def test_score_labels_ranks_the_right_label_first(hf: ModelBackend, easy_cases) -> None:
    for prompt, labels in easy_cases:
        assert hf.score_labels(prompt, labels).best == labels[0], prompt


def test_shared_prefix_scores_equal_full_forward_passes(hf: ModelBackend) -> None:
    import torch

    prompt = "The capital of France is"
    # Shared prefixes (" the city of ...") exercise the token trie of the packed scorer.
    labels = [" Paris", " the city of light", " the city of love", " a big city in Europe"]
    scores = hf.score_labels(prompt, labels)
    prompt_ids = hf.prompt_ids(prompt)
    for label in labels:
        ids = prompt_ids + hf.label_ids(label)
        with torch.inference_mode():
            logprobs = torch.log_softmax(hf.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = sum(float(logprobs[i - 1, ids[i]]) for i in range(len(prompt_ids), len(ids)))
        assert scores.scores[label] == pytest.approx(expected, abs=1e-3)


def test_backends_agree(hf: ModelBackend, llama: ModelBackend, easy_cases) -> None:
    chat = [Message(role="user", content="Which animal barks? Answer with one word.")]
    cases = [*easy_cases, (chat, ["Dog", "Cat", "Fish", "Table"])]
    for prompt, labels in cases:
        assert hf.prompt_ids(prompt) == llama.prompt_ids(prompt)
        a, b = hf.score_labels(prompt, labels).scores, llama.score_labels(prompt, labels).scores
        for x in labels:
            # Same weights; llama.cpp computes with quantized activations, transformers in float32.
            assert a[x] == pytest.approx(b[x], abs=0.5), (prompt, x)
            for y in labels:
                if a[x] - a[y] > 1.0:  # the order of two labels more than 1 nat apart must agree
                    assert b[x] > b[y], (prompt, x, y)


def test_schema_points_to_the_llama_cpp_backend(hf: ModelBackend) -> None:
    with pytest.raises(ModelError, match="llama_cpp"):
        hf.generate([Message(role="user", content="Reply in JSON.")], schema={"type": "object"})


def test_images_need_a_vision_model(hf: ModelBackend) -> None:
    with pytest.raises(ModelError, match="text-only"):
        hf.generate([Message(role="user", content="Describe it.")], images=["cat.png"])


def test_peft_adapter_changes_the_scores(hf: ModelBackend, models_settings: Settings, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from kdsl.models.hf import HFBackend

    base = AutoModelForCausalLM.from_pretrained(hf_path(SMOLLM2, models_settings))
    # init_lora_weights=False gives a random (non-identity) adapter, so the output must move.
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    with HFBackend(SMOLLM2, models_settings, adapter=tmp_path / "adapter") as tuned:
        assert tuned.info.adapter == str(tmp_path / "adapter")
        prompt, labels = "The capital of France is", [" Paris", " banana"]
        assert tuned.score_labels(prompt, labels).scores != pytest.approx(hf.score_labels(prompt, labels).scores)
    with pytest.raises(ModelError, match="adapter"):
        HFBackend(SMOLLM2, models_settings, adapter=tmp_path)
