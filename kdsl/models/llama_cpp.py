"""llama.cpp backend (llama-cpp-python): GGUF models on CPU, with JSON-schema-constrained output."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from kdsl.config import Settings
from kdsl.errors import ModelError
from kdsl.models.base import Generation, Message, ModelBackend, ModelInfo, Prompt, ScoreParts, schema_dict
from kdsl.models.registry import ResolvedModel, resolve_gguf

logger = logging.getLogger(__name__)


class LlamaCppBackend(ModelBackend):
    """A GGUF model run by llama.cpp, from a pack name, a `.gguf` file or a folder holding one.

    `threads` defaults to half the cores, as llama-cpp-python does: ggml's threads spin at barriers, so one
    thread more than the free cores slows decoding by orders of magnitude on a busy machine.
    """

    name = "llama_cpp"
    supports_schema = True

    def __init__(
        self,
        model: str | Path,
        settings: Settings | None = None,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        n_batch: int = 512,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError("the llama_cpp backend needs llama-cpp-python; see DEVELOPERS.md for the build "
                             "flags (pip install llama-cpp-python)") from e
        self._resolved: ResolvedModel = resolve_gguf(model, settings)
        threads = threads or max(1, (os.cpu_count() or 2) // 2)
        start = time.perf_counter()
        try:
            self.llm = Llama(model_path=str(self._resolved.path), n_ctx=n_ctx, n_threads=threads,
                             n_threads_batch=threads, n_batch=n_batch, logits_all=False, verbose=verbose)
        except ValueError as e:  # llama-cpp-python reports a failed load as ValueError
            raise ModelError(f"llama.cpp cannot load {self._resolved.path}: {e}. Check the file with "
                             f"`kdsl models verify` or name another GGUF") from e
        self.load_seconds = time.perf_counter() - start
        self._formatter = self._chat_formatter()
        logger.info("loaded %s with llama.cpp in %.1f s", self._resolved.path, self.load_seconds)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(backend=self.name, model=self._resolved.name, path=str(self._resolved.path),
                         pack=self._resolved.pack, sha256=self._resolved.sha256)

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None

        def text(token: int) -> str:
            return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

        return Jinja2ChatFormatter(template=template, eos_token=text(self.llm.token_eos()),
                                   bos_token=text(self.llm.token_bos()), add_generation_prompt=True)

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
            raise ModelError("the llama_cpp backend is text-only; use the hf backend with a vision model for images")
        kwargs: dict[str, Any] = {}
        if schema is not None:
            # llama-cpp-python compiles the schema to a GBNF grammar: every sampled token keeps the JSON valid.
            kwargs["response_format"] = {"type": "json_object", "schema": schema_dict(schema)}
        start = time.perf_counter()
        result = self.llm.create_chat_completion(
            messages=[m.model_dump() for m in messages], max_tokens=max_tokens, temperature=temperature,
            # Plain sampling: no top-k/top-p/min-p truncation, no repeat penalty, so temperature means the same
            # here as in the transformers backend.
            top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=seed, **kwargs,
        )
        seconds = time.perf_counter() - start
        choice = result["choices"][0]
        usage = result["usage"]
        self.usage.record(usage["prompt_tokens"], usage["completion_tokens"], seconds)
        return Generation(text=choice["message"]["content"] or "", prompt_tokens=usage["prompt_tokens"],
                          completion_tokens=usage["completion_tokens"], seconds=seconds,
                          finish_reason=choice.get("finish_reason"))

    # --- label scoring ----------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt as `score_labels` sees it: raw text, or messages through the chat template."""
        if isinstance(prompt, str):
            return self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        messages = self._check_messages(prompt)
        if self._formatter is None:
            raise ModelError(f"{self._resolved.name} has no chat template; score a plain-text prompt instead")
        text = self._formatter(messages=[m.model_dump() for m in messages]).prompt
        # The template already wrote any BOS it wants, as the chat handler of llama-cpp-python assumes.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def label_ids(self, label: str) -> list[int]:
        return self.llm.tokenize(label.encode("utf-8"), add_bos=False, special=False)

    def _score(self, prompt: Prompt, labels: list[str], images: list[Any]) -> ScoreParts:
        prompt_ids = self.prompt_ids(prompt)
        if not prompt_ids:
            raise ValueError("the prompt tokenizes to nothing; give some text to condition on")
        if len(prompt_ids) + max(len(self.label_ids(label)) for label in labels) > self.llm.n_ctx():
            raise ModelError(f"prompt and label exceed the context of {self.llm.n_ctx()} tokens; load the model "
                             f"with a larger n_ctx")
        first = _log_softmax(self._eval_prompt(prompt_ids))
        scores: dict[str, float] = {}
        counts: dict[str, int] = {}
        for label in labels:
            ids = self.label_ids(label)
            total = float(first[ids[0]])
            if len(ids) > 1:
                total += self._continuation(len(prompt_ids), ids)
            scores[label] = total
            counts[label] = len(ids)
        return scores, counts, len(prompt_ids)

    def _eval_prompt(self, prompt_ids: list[int]) -> np.ndarray:
        """Evaluate the prompt (reusing the longest cached prefix) and return the next-token logits."""
        import llama_cpp

        llm = self.llm
        cached = llm.longest_token_prefix(llm.input_ids[: llm.n_tokens].tolist(), prompt_ids)
        # Re-evaluate at least the last prompt token: its logits are not kept between calls.
        llm.n_tokens = min(cached, len(prompt_ids) - 1)
        llm.eval(prompt_ids[llm.n_tokens:])
        logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).copy()

    def _continuation(self, prompt_len: int, ids: list[int]) -> float:
        """Log-likelihood of tokens 2..k of a label: one decode of tokens 1..k-1 after the cached prompt."""
        import llama_cpp

        llm = self.llm
        n = len(ids) - 1
        batch = llama_cpp.llama_batch_init(n, 0, 1)
        try:
            for i, token in enumerate(ids[:-1]):
                batch.token[i] = token
                batch.pos[i] = prompt_len + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = n
            status = llama_cpp.llama_decode(llm.ctx, batch)
            if status != 0:
                raise ModelError(f"llama.cpp failed to decode a label continuation (status {status})")
            total = 0.0
            for i in range(n):
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, i), shape=(llm.n_vocab(),))
                total += float(_log_softmax(row)[ids[i + 1]])
        finally:
            llama_cpp.llama_batch_free(batch)
            # Drop the label from the KV cache so the next label (and the next call) sees the bare prompt.
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), -1, prompt_len, -1)
        return total

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    top = logits.max()
    return logits - top - math.log(np.exp(logits - top).sum())


def parse_json(generation: Generation) -> Any:
    """The JSON value of a schema-constrained generation; `ModelError` if it was cut off by `max_tokens`."""
    try:
        return json.loads(generation.text)
    except json.JSONDecodeError as e:
        raise ModelError(f"the model output is not complete JSON ({e}); raise max_tokens "
                         f"(finish_reason={generation.finish_reason})") from e
