"""The Qwen2.5-Coder-0.5B pack end to end on llama.cpp: pull, verify, generate schema-valid JSON, score labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kdsl.config import Settings
from kdsl.models import Message, load_backend, pull, verify

pytestmark = pytest.mark.slow

QWEN = "qwen2.5-coder-0.5b-instruct"
RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["refund", "delivery", "greeting"]},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 1, "maxItems": 4},
    },
    "required": ["label", "keywords"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = os.environ.get("KDSL_TEST_HOME")
    return Settings(home=Path(home) if home else tmp_path_factory.mktemp("kdsl_home"))


def test_qwen_pack_on_llama_cpp(settings: Settings) -> None:
    pytest.importorskip("llama_cpp")
    pull(QWEN, settings, progress=False)
    assert verify(QWEN, settings).ok
    with load_backend(f"llama_cpp:{QWEN}", settings, n_ctx=2048) as model:
        for text in ["I want my money back for the broken kettle", "Where is my parcel?", "Hi!"]:
            out = model.generate(
                [Message(role="system", content="Write a keyword rule for the intent of the message, as JSON."),
                 Message(role="user", content=text)],
                schema=RULE_SCHEMA, max_tokens=120,
            )
            rule = json.loads(out.text)
            assert rule["label"] in {"refund", "delivery", "greeting"} and rule["keywords"]
        assert model.score_labels("The capital of France is", [" Paris", " banana"]).best == " Paris"
        chat = [Message(role="user", content="What is 2 + 2? Answer with the number only.")]
        assert model.score_labels(chat, ["4", "7"]).best == "4"
        assert model.usage.calls == 5
