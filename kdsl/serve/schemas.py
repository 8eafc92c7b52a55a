"""The HTTP API's request and response bodies, in one place (OpenAPI at /docs is generated from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdsl.agents.arbiter import Decision, Policy, Source
from kdsl.agents.predictor import PredictorInfo
from kdsl.rules import Rule

# --- requests -------------------------------------------------------------------------------------------------


class TurnIn(BaseModel):
    """One utterance. `image` is the index of the picture sent in this turn, in the sample's `images`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "agent"]
    text: str = ""
    image: int | None = Field(None, ge=0)


class SampleIn(BaseModel):
    """One dialogue to classify."""

    model_config = ConfigDict(
        extra="forbid", strict=True,
        json_schema_extra={"examples": [{"task": "dialogue_intent", "turns": [
            {"role": "user", "text": "贴膜有气泡怎么办"}, {"role": "user", "image": 0}],
            "images": ["<base64 of a JPEG or PNG>"]}]},
    )

    id: str | None = Field(None, min_length=1, max_length=200, description="Your id; echoed in the decision.")
    task: str = Field(min_length=1, description="One of the tasks the decider serves (see /healthz).")
    turns: list[TurnIn] = Field(min_length=1, description="The dialogue, oldest turn first.")
    images: list[str] = Field(default_factory=list, description="Base64 images (a data: URL prefix is allowed).")
    candidates: list[str] | None = Field(None, description="Restrict the answer to these labels of the task.")

    @model_validator(mode="after")
    def _check_image_refs(self) -> SampleIn:
        for turn in self.turns:
            if turn.image is not None and turn.image >= len(self.images):
                raise ValueError(f"a turn refers to image {turn.image} but the sample has {len(self.images)} image(s)")
        return self


class PredictRequest(BaseModel):
    """A batch of samples: `{"samples": [...]}`. A single sample object (without the wrapper) is accepted too."""

    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_sample(cls, data: Any) -> Any:
        if isinstance(data, dict) and "samples" not in data and "task" in data:
            return {"samples": [data]}
        return data


# --- responses ------------------------------------------------------------------------------------------------


class RuleOut(BaseModel):
    """A rule as the API shows it; the statistics are those measured on the verify split (null when unmeasured)."""

    model_config = ConfigDict(frozen=True)

    id: str
    label: str
    task: str
    statement: str
    condition: str
    status: str
    precision: float | None = None
    precision_lower: float | None = Field(None, description="Wilson lower bound of precision: what the arbiter "
                                                            "trusts the rule by.")
    support: int | None = None
    coverage: float | None = None

    @classmethod
    def of(cls, rule: Rule) -> RuleOut:
        st = rule.stats
        return cls(id=rule.id, label=rule.label, task=rule.task, statement=rule.statement,
                   condition=rule.when.render(), status=rule.status,
                   precision=st.precision if st else None, precision_lower=st.precision_lower if st else None,
                   support=st.support if st else None, coverage=st.coverage if st else None)


class LabelProb(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    prob: float


class DecisionOut(BaseModel):
    """One prediction and why: the rules that fired, the decider's top labels, the source that won."""

    model_config = ConfigDict(frozen=True)

    item: int = Field(description="Index of the sample in the request (or the input file).")
    id: str | None = Field(description="The sample's id as given.")
    task: str
    label: str | None = Field(description="null when the arbiter abstains.")
    confidence: float
    source: Source = Field(description="rule, decider, stacked (both) or abstain.")
    policy: Policy
    fired_rules: list[RuleOut]
    decider_top: list[LabelProb]
    gold: str | None = Field(None, description="The sample's label, when the input had one (batch files).")

    @classmethod
    def of(cls, decision: Decision, item: int, sample_id: str | None, rules: dict[str, Rule],
           gold: str | None = None) -> DecisionOut:
        """`rules` maps rule ids to the served rules, whose own statistics (or their absence) are reported."""
        fired = []
        for f in decision.fired_rules:
            rule = rules.get(f.id)
            fired.append(RuleOut.of(rule) if rule is not None else RuleOut(
                id=f.id, label=f.label, task=decision.task, statement=f.statement, condition=f.condition,
                status="accepted", precision=f.precision, precision_lower=f.precision_lower, support=f.support))
        return cls(item=item, id=sample_id, task=decision.task, label=decision.label,
                   confidence=decision.confidence, source=decision.source, policy=decision.policy,
                   fired_rules=fired, decider_top=[LabelProb(label=lab, prob=p) for lab, p in decision.decider_top],
                   gold=gold)


class PredictResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    decisions: list[DecisionOut]
    decider: str
    policy: Policy
    seconds: float = Field(description="Time spent on the request in the server.")


class RulesResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    total: int = Field(description="Rules matching the query, before offset and limit.")
    rules: list[RuleOut]


class Health(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["ok"] = "ok"
    predictor: PredictorInfo
    label_spaces: dict[str, tuple[str, ...]]
    queued_samples: int
    uptime_s: float


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Stable, machine-readable: invalid_request, invalid_json, unknown_task, "
                                  "unsupported_media_type, empty_batch, empty_turns, empty_dialogue, unknown_label, "
                                  "too_many_samples, too_many_turns, text_too_long, too_many_images, "
                                  "image_too_large, invalid_image, body_too_large, timeout, overloaded, "
                                  "model_error, not_found, method_not_allowed, internal.")
    message: str
    item: int | None = Field(None, description="Index of the offending sample in the request, when one is.")


class ErrorResponse(BaseModel):
    """Every error the API returns has this shape (never a bare 500 with a traceback)."""

    model_config = ConfigDict(frozen=True)

    error: ErrorDetail
