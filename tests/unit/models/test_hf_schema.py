"""Schema-constrained output on the transformers backend (llguidance), with the real SmolLM2 pack."""

from __future__ import annotations

import importlib.util
import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, StringConstraints

from kdsl.errors import ModelError
from kdsl.models import Message, ModelBackend

HAS_LLGUIDANCE = importlib.util.find_spec("llguidance") is not None


class Rule(BaseModel):
    label: Literal["refund", "delivery", "greeting"]
    keywords: list[Annotated[str, StringConstraints(max_length=20)]] = Field(min_length=1, max_length=3)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLGUIDANCE, reason="llguidance is not installed")
def test_schema_constrains_the_reply(hf: ModelBackend) -> None:
    assert hf.supports_schema
    for text, temperature in [("I want my money back for the broken kettle", 0.0), ("Where is my parcel?", 1.0)]:
        out = hf.generate([Message(role="system", content="Write a keyword rule for the intent, as JSON."),
                           Message(role="user", content=text)], schema=Rule, max_tokens=120, temperature=temperature)
        rule = Rule.model_validate(json.loads(out.text))
        assert 1 <= len(rule.keywords) <= 3 and out.finish_reason == "stop"
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    out = hf.generate([Message(role="user", content="Pick a digit, as JSON.")], schema=schema, max_tokens=20)
    assert 0 <= json.loads(out.text)["n"] <= 9


@pytest.mark.skipif(HAS_LLGUIDANCE, reason="llguidance is installed")
def test_without_llguidance_the_error_says_what_to_install(hf: ModelBackend) -> None:
    assert not hf.supports_schema
    with pytest.raises(ModelError, match=r"pip install llguidance.*llama_cpp"):
        hf.generate([Message(role="user", content="Reply in JSON.")], schema={"type": "object"})
