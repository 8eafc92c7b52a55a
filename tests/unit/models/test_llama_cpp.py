"""The llama.cpp backend on the real SmolLM2 pack: generation, schema-constrained JSON, label scoring."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from kdsl.models import Message, ModelBackend, load_backend

pytestmark = pytest.mark.slow


class Verdict(BaseModel):
    intent: Literal["greeting", "complaint", "question", "purchase"]
    confident: bool
    keywords: list[str] = Field(max_length=3)


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["greeting", "complaint", "question", "purchase"]},
        "confident": {"type": "boolean"},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["intent", "confident", "keywords"],
    "additionalProperties": False,
}

PROMPTS = [
    "Hello there, good morning!",
    "My order arrived broken and nobody answers my emails.",
    "What time do you open on Sundays?",
    "I would like to buy two tickets for tonight.",
    "asdf qwerty ???",
]


def _ask(text: str) -> list[Message]:
    return [
        Message(role="system", content="Classify the user's message. Reply in JSON."),
        Message(role="user", content=text),
    ]


def test_generates_text_and_counts_usage(llama: ModelBackend) -> None:
    before = llama.usage.snapshot()
    out = llama.generate([Message(role="user", content="Name a colour.")], max_tokens=16)
    assert out.text.strip()
    assert out.prompt_tokens > 5 and 0 < out.completion_tokens <= 16 and out.seconds > 0
    spent = llama.usage.since(before)
    assert spent.calls == 1 and spent.completion_tokens == out.completion_tokens


def test_greedy_is_deterministic_and_seed_repeats_sampling(llama: ModelBackend) -> None:
    chat = [Message(role="user", content="Write one word about the sea.")]
    assert llama.generate(chat, max_tokens=8).text == llama.generate(chat, max_tokens=8).text
    a = llama.generate(chat, max_tokens=8, temperature=1.0, seed=7)
    b = llama.generate(chat, max_tokens=8, temperature=1.0, seed=7)
    assert a.text == b.text


@pytest.mark.parametrize("text", PROMPTS)
def test_schema_output_always_parses(llama: ModelBackend, text: str) -> None:
    out = llama.generate(_ask(text), schema=VERDICT_SCHEMA, max_tokens=120)
    data = json.loads(out.text)
    Verdict.model_validate(data)
    assert set(data) == {"intent", "confident", "keywords"}


def test_schema_from_a_pydantic_model(llama: ModelBackend) -> None:
    out = llama.generate(_ask(PROMPTS[2]), schema=Verdict, max_tokens=120, temperature=0.7, seed=3)
    Verdict.model_validate_json(out.text)


def test_score_labels_ranks_the_right_label_first(llama: ModelBackend, easy_cases) -> None:
    for prompt, labels in easy_cases:
        scores = llama.score_labels(prompt, labels)
        assert scores.best == labels[0], (prompt, scores.scores)
        assert all(v < 0 for v in scores.scores.values())


def test_score_labels_on_a_chat_prompt(llama: ModelBackend) -> None:
    chat = [Message(role="user", content="What is the capital of France? Answer with one word.")]
    scores = llama.score_labels(chat, ["Paris", "Banana", "Keyboard"])
    assert scores.best == "Paris"
    assert scores.prompt_tokens > 20
    assert abs(sum(scores.probabilities().values()) - 1) < 1e-9


def test_multi_token_labels_chain_and_state_is_restored(llama: ModelBackend) -> None:
    prompt = "The capital of France is"
    whole = llama.score_labels(prompt, [" the city of light", " Paris"])
    assert whole.label_tokens[" the city of light"] > 1
    # log p(" the city of light") = log p(" the") + log p(" city of light" | prompt + " the")
    head = llama.score_labels(prompt, [" the"]).scores[" the"]
    tail = llama.score_labels(prompt + " the", [" city of light"]).scores[" city of light"]
    assert whole.scores[" the city of light"] == pytest.approx(head + tail, abs=0.05)
    again = llama.score_labels(prompt, [" Paris", " the city of light"])
    assert again.scores == pytest.approx(whole.scores, abs=1e-4)


def test_bad_labels_are_refused(llama: ModelBackend) -> None:
    with pytest.raises(ValueError):
        llama.score_labels("x", [])
    with pytest.raises(ValueError):
        llama.score_labels("x", [" a", " a"])


def test_load_backend_by_spec(models_settings, smollm2) -> None:
    pytest.importorskip("llama_cpp")
    with load_backend("llama_cpp:smollm2-135m-instruct", models_settings, n_ctx=512) as backend:
        assert backend.info.pack == "smollm2-135m-instruct" and backend.info.sha256
        assert backend.generate([Message(role="user", content="Hi")], max_tokens=4).completion_tokens > 0
    with load_backend(f"gguf:{smollm2}", models_settings, n_ctx=512) as backend:
        assert backend.info.path == str(smollm2)


def test_images_are_refused(llama: ModelBackend) -> None:
    from kdsl.models import ModelError

    with pytest.raises(ModelError, match="text-only"):
        llama.score_labels([Message(role="user", content="What is this?")], ["cat"], images=["cat.png"])
