"""The model protocol every backend implements: chat generation and label scoring, with usage accounting."""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field

from kdsl.errors import ModelError

logger = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class Generation(BaseModel):
    """The text a backend generated, with its cost."""

    model_config = ConfigDict(frozen=True)

    text: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    seconds: float = Field(ge=0.0, description="Wall-clock seconds of the call.")
    finish_reason: str | None = Field(default=None, description="'stop', 'length' or None when unknown.")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class LabelScores(BaseModel):
    """Each label's total log-likelihood (natural log) as a continuation of one prompt."""

    model_config = ConfigDict(frozen=True)

    scores: dict[str, float] = Field(description="label -> sum of its tokens' log-probabilities.")
    label_tokens: dict[str, int] = Field(description="label -> number of tokens it was scored on.")
    prompt_tokens: int = Field(ge=0)
    seconds: float = Field(ge=0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        """Tokens evaluated: the prompt once plus every label's tokens."""
        return self.prompt_tokens + sum(self.label_tokens.values())

    @property
    def best(self) -> str:
        """The most likely label (ties broken by the order the labels were given)."""
        return max(self.scores, key=self.scores.__getitem__)

    def ranking(self, normalize: bool = False) -> list[str]:
        """Labels from most to least likely; `normalize` ranks by mean log-probability per token."""
        key = self.mean_logprob if normalize else self.scores.__getitem__
        return sorted(self.scores, key=key, reverse=True)

    def mean_logprob(self, label: str) -> float:
        return self.scores[label] / max(self.label_tokens[label], 1)

    def probabilities(self) -> dict[str, float]:
        """Softmax over the total log-likelihoods: a distribution restricted to these labels."""
        top = max(self.scores.values())
        exp = {k: math.exp(v - top) for k, v in self.scores.items()}
        total = sum(exp.values())
        return {k: v / total for k, v in exp.items()}


class UsageSnapshot(BaseModel):
    """Immutable copy of a `Usage` at one moment, for budgets and session records."""

    model_config = ConfigDict(frozen=True)

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Usage(BaseModel):
    """Running totals of one backend's calls; every `generate` and `score_labels` adds to it (thread-safe)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def record(self, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.seconds += seconds

    def snapshot(self) -> UsageSnapshot:
        with self._lock:
            return UsageSnapshot(calls=self.calls, prompt_tokens=self.prompt_tokens,
                                 completion_tokens=self.completion_tokens, seconds=self.seconds)

    def since(self, before: UsageSnapshot) -> UsageSnapshot:
        """What was spent after `before` was taken."""
        now = self.snapshot()
        return UsageSnapshot(calls=now.calls - before.calls, prompt_tokens=now.prompt_tokens - before.prompt_tokens,
                             completion_tokens=now.completion_tokens - before.completion_tokens,
                             seconds=now.seconds - before.seconds)

    def reset(self) -> None:
        with self._lock:
            self.calls = self.prompt_tokens = self.completion_tokens = 0
            self.seconds = 0.0


class ModelInfo(BaseModel):
    """Where a loaded model came from, for the provenance every artifact records."""

    model_config = ConfigDict(frozen=True)

    backend: str
    model: str = Field(description="What the user named: a pack, a path or a Hugging Face id.")
    path: str | None = Field(default=None, description="The file or folder actually loaded.")
    pack: str | None = None
    sha256: str | None = Field(default=None, description="The pack's pinned sha256 (of its GGUF) when known.")
    adapter: str | None = None


Prompt = str | Sequence[Message]
ScoreParts = tuple[dict[str, float], dict[str, int], int]  # label -> log-likelihood, label -> tokens, prompt tokens


class ModelBackend(ABC):
    """A loaded language model. Subclasses set `name` and implement `generate` and `_score`.

    `score_labels` computes the prompt once and scores each label as its continuation; it never runs one full
    forward pass per label from scratch.
    """

    name: ClassVar[str] = "base"
    supports_images: ClassVar[bool] = False
    supports_schema: ClassVar[bool] = False

    def __init__(self) -> None:
        self.usage = Usage()

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Provenance of the loaded model."""

    @abstractmethod
    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        schema: dict[str, Any] | type[BaseModel] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Generation:
        """Reply to a chat. `schema` (a JSON schema or a pydantic model class) constrains the reply to valid JSON
        of that schema; `images` (PIL images or paths) go with the last user message on multimodal models.
        `temperature=0` is greedy decoding; `seed` makes sampling repeatable."""

    def score_labels(self, prompt: Prompt, labels: Sequence[str], images: Sequence[Any] | None = None) -> LabelScores:
        """Total log-likelihood of each label as the continuation of `prompt`.

        A `str` prompt is scored as raw text; a list of messages goes through the chat template with the
        assistant turn opened, so the labels are scored as the start of the reply. `images` go with the last
        user message, on backends that take images.
        """
        labels = list(labels)
        if not labels:
            raise ValueError("score_labels needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels!r}")
        if any(not label for label in labels):
            raise ValueError("labels must be non-empty strings")
        if images and not self.supports_images:
            raise ModelError(f"the {self.name} backend is text-only; score images with the hf_vision backend")
        start = time.perf_counter()
        scores, label_tokens, prompt_tokens = self._score(prompt, labels, list(images or []))
        seconds = time.perf_counter() - start
        self.usage.record(prompt_tokens + sum(label_tokens.values()), 0, seconds)
        return LabelScores(scores=scores, label_tokens=label_tokens, prompt_tokens=prompt_tokens, seconds=seconds)

    @abstractmethod
    def _score(self, prompt: Prompt, labels: list[str], images: list[Any]) -> ScoreParts:
        """Return (label -> log-likelihood, label -> token count, prompt token count)."""

    def close(self) -> None:  # noqa: B027 - optional hook; most backends free memory when collected
        """Free the model's memory. The backend is unusable afterwards."""

    def __enter__(self) -> ModelBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _check_messages(messages: Sequence[Message]) -> list[Message]:
        messages = [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]
        if not messages:
            raise ValueError("generate needs at least one message")
        return messages


def schema_dict(schema: dict[str, Any] | type[BaseModel]) -> dict[str, Any]:
    """A JSON schema as a dict, from a dict or a pydantic model class."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    raise TypeError(f"schema must be a JSON-schema dict or a pydantic model class, got {type(schema).__name__}")


@contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t: ...` then `t[0]` holds the elapsed seconds."""
    out = [0.0]
    start = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - start


# --- backend registry -----------------------------------------------------------------------------------------

# Built-in backends are named by import path so that `import kdsl.models` does not import them.
_BACKENDS: dict[str, type[ModelBackend] | str] = {
    "llama_cpp": "kdsl.models.llama_cpp:LlamaCppBackend",
    "hf": "kdsl.models.hf:HFBackend",
    "hf_vision": "kdsl.models.hf_vision:HFVisionBackend",
    "vllm": "kdsl.models.vllm:VLLMBackend",
    "openai": "kdsl.models.openai_http:OpenAIBackend",
}
_ALIASES = {"llama.cpp": "llama_cpp", "llamacpp": "llama_cpp", "gguf": "llama_cpp",
            "transformers": "hf", "huggingface": "hf", "vision": "hf_vision",
            "openai_http": "openai", "vllm_server": "openai"}


def register_backend(name: str, cls: type[ModelBackend] | str) -> None:
    """Make a backend loadable as `name:<model>`. `cls` is a `ModelBackend` subclass or `"module:Class"`."""
    if not name.isidentifier():
        raise ValueError(f"backend name must be an identifier, got {name!r}")
    if not isinstance(cls, str) and not (isinstance(cls, type) and issubclass(cls, ModelBackend)):
        raise TypeError(f"backend {name!r} must be a ModelBackend subclass or 'module:Class', got {cls!r}")
    _BACKENDS[name] = cls


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[ModelBackend]:
    """The class registered under `name` (or one of its aliases), imported on first use."""
    key = _ALIASES.get(name, name)
    try:
        entry = _BACKENDS[key]
    except KeyError:
        raise ModelError(f"unknown model backend {name!r}; choose one of {', '.join(backend_names())}") from None
    if isinstance(entry, str):
        module_name, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attr)
        _BACKENDS[key] = entry
    return entry


class BackendSpec(BaseModel):
    """`backend:model`, e.g. `llama_cpp:smollm2-135m-instruct`, `hf:/models/qwen`, `hf:Qwen/Qwen2-VL-2B-Instruct`."""

    model_config = ConfigDict(frozen=True)

    backend: str
    model: str

    @classmethod
    def parse(cls, spec: str) -> BackendSpec:
        backend, sep, model = spec.partition(":")
        # Refuse a bare model or a path: which backend runs it is a choice the user makes explicitly.
        if not sep or not backend or "/" in backend or "\\" in backend or backend.startswith("."):
            raise ValueError(
                f"model spec {spec!r} must look like 'BACKEND:MODEL', e.g. 'llama_cpp:smollm2-135m-instruct' "
                f"(backends: {', '.join(backend_names())})"
            )
        if not model:
            raise ValueError(f"model spec {spec!r} names no model after {backend!r}:")
        return cls(backend=_ALIASES.get(backend, backend), model=model)

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}"


def load_backend(spec: str | BackendSpec, settings: Any = None, **options: Any) -> ModelBackend:
    """Load a model behind the backend named in `spec` ('backend:model'); `options` go to the backend.

    Example: `load_backend("llama_cpp:smollm2-135m-instruct", Settings(), n_ctx=2048)`.
    """
    spec = spec if isinstance(spec, BackendSpec) else BackendSpec.parse(spec)
    cls = backend_class(spec.backend)
    logger.info("loading %s", spec)
    return cls(spec.model, settings=settings, **options)  # type: ignore[call-arg]
