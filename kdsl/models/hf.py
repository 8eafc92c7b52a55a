"""transformers backend: causal LMs (optionally with a peft adapter) for generation and label scoring."""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kdsl.config import Settings
from kdsl.errors import ModelError
from kdsl.models.base import Generation, Message, ModelBackend, ModelInfo, Prompt, ScoreParts, schema_dict
from kdsl.models.registry import ResolvedModel, resolve_hf

logger = logging.getLogger(__name__)

_DTYPES = ("float32", "bfloat16", "float16")
_HAS_LLGUIDANCE = importlib.util.find_spec("llguidance") is not None


class HFBackend(ModelBackend):
    """A transformers causal LM on CPU (or `device`), from a pack, a local folder, a GGUF or a Hugging Face id.

    A pack or GGUF is converted once to safetensors (see `kdsl.models.convert`). A Hugging Face id loads only
    from the local Hugging Face cache unless `allow_download=True`: nothing is fetched from a hub by default.
    `adapter` is a peft adapter folder applied on top of the base model. `schema` in `generate` constrains the
    reply with llguidance (a JSON-schema grammar checked token by token) when llguidance is installed.
    """

    name = "hf"
    supports_schema = _HAS_LLGUIDANCE

    def __init__(
        self,
        model: str | Path,
        settings: Settings | None = None,
        *,
        adapter: str | Path | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        threads: int | None = None,
        allow_download: bool = False,
        label_batch_size: int = 32,
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if label_batch_size < 1:
            raise ValueError(f"label_batch_size must be >= 1, got {label_batch_size}")
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self._resolved: ResolvedModel = resolve_hf(model, settings)
        self._adapter = str(adapter) if adapter is not None else None
        self._device = device
        self._label_batch_size = label_batch_size
        location = self._resolved.location
        start = time.perf_counter()
        try:
            self._load(location, getattr(torch, dtype), local_files_only=not allow_download)
        except OSError as e:
            hint = (" It is not in the local Hugging Face cache; pass allow_download=True to fetch it, or name a "
                    "local folder or a kdsl pack" if self._resolved.hf_id and not allow_download else "")
            raise ModelError(f"cannot load {location!r} with transformers: {e}.{hint}") from e
        if self._adapter is not None:
            self.model = _apply_adapter(self.model, self._adapter)
        self.model.to(device)
        self.model.eval()
        self.load_seconds = time.perf_counter() - start
        logger.info("loaded %s with transformers in %.1f s", location, self.load_seconds)

    def _load(self, location: str, dtype: Any, local_files_only: bool) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_files_only)
        self.model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, local_files_only=local_files_only)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(backend=self.name, model=self._resolved.name, path=self._resolved.location,
                         pack=self._resolved.pack, sha256=self._resolved.sha256, adapter=self._adapter)

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
        import torch

        messages = self._check_messages(messages)
        if schema is not None and not self.supports_schema:
            # xgrammar pulls triton and lm-format-enforcer 0.11 does not import with transformers 5; llguidance
            # (a small Rust wheel) works on CPU.
            hint = "" if _HAS_LLGUIDANCE else " (pip install llguidance)"
            raise ModelError(f"schema-constrained output is not supported by the {self.name} backend{hint}; use "
                             f"the llama_cpp backend (e.g. 'llama_cpp:{self._resolved.name}')")
        if images and not self.supports_images:
            raise ModelError(f"{self._resolved.name} is a text-only model; images need a vision model "
                             f"(the hf_vision backend)")
        start = time.perf_counter()
        inputs = self._chat_inputs(messages, list(images or []))
        prompt_len = inputs["input_ids"].shape[1]
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": self._pad_id()}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        if schema is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([self._schema_guide(schema_dict(schema), prompt_len)])
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new = output[0, prompt_len:].tolist()
        eos = self._eos_ids()
        finish = "stop" if new and new[-1] in eos else "length"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        seconds = time.perf_counter() - start
        self.usage.record(prompt_len, len(new), seconds)
        return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=len(new), seconds=seconds,
                          finish_reason=finish)

    def _schema_guide(self, schema: dict[str, Any], prompt_len: int) -> Any:
        import llguidance
        import llguidance.hf

        if getattr(self, "_guidance_tokenizer", None) is None:
            self._guidance_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, eos_token=sorted(self._eos_ids()))
        matcher = llguidance.LLMatcher(self._guidance_tokenizer, llguidance.LLMatcher.grammar_from_json_schema(schema))
        if matcher.is_error():
            raise ModelError(f"llguidance cannot compile the schema: {matcher.get_error()}")
        return _SchemaGuide(matcher, prompt_len, self._guidance_tokenizer.vocab_size)

    def _chat_inputs(self, messages: Sequence[Message], images: list[Any]) -> dict[str, Any]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"{self._resolved.name} has no chat template; it is not an instruction model")
        inputs = self.tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {k: v.to(self._device) for k, v in inputs.items()}

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return {i for i in [*ids, self.tokenizer.eos_token_id] if i is not None}

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else min(self._eos_ids())

    # --- label scoring ----------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: Prompt, images: Sequence[Any] | None = None) -> list[int]:
        """Token ids of a prompt as `score_labels` sees it: raw text, or messages through the chat template."""
        return self._prompt_inputs(prompt, list(images or []))["input_ids"][0].tolist()

    def _prompt_inputs(self, prompt: Prompt, images: list[Any]) -> dict[str, Any]:
        import torch

        if isinstance(prompt, str):
            if images:
                raise ValueError("images go with a chat prompt (a list of messages), not with raw text")
            ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
            return {"input_ids": torch.tensor([ids], device=self._device)}
        return self._chat_inputs(self._check_messages(prompt), images)

    def label_ids(self, label: str) -> list[int]:
        return self.tokenizer(label, add_special_tokens=False)["input_ids"]

    def _score(self, prompt: Prompt, labels: list[str], images: list[Any]) -> ScoreParts:
        import torch

        inputs = self._prompt_inputs(prompt, images)
        prompt_len = inputs["input_ids"].shape[1]
        if not prompt_len:
            raise ValueError("the prompt tokenizes to nothing; give some text to condition on")
        tokenized = {label: self.label_ids(label) for label in labels}
        self._forget_positions()
        with torch.inference_mode():
            # The prompt once: its KV cache is shared by every label, and its last logits score each first token.
            # Only the last position's logits are needed (the vocabulary projection is a fifth of a small model).
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            prefix_cache = out.past_key_values
            scores = {label: float(first[ids[0]]) for label, ids in tokenized.items()}
            longer = [label for label in labels if len(tokenized[label]) > 1]
            if longer and self.packs_labels:
                extras = self._continuations_packed(prefix_cache, prompt_len, [tokenized[b] for b in longer])
                for label, extra in zip(longer, extras, strict=True):
                    scores[label] += extra
            else:
                for begin in range(0, len(longer), self._label_batch_size):
                    batch = longer[begin:begin + self._label_batch_size]
                    extras = self._continuations(prefix_cache, [tokenized[b] for b in batch])
                    for label, extra in zip(batch, extras, strict=True):
                        scores[label] += extra
        return scores, {label: len(ids) for label, ids in tokenized.items()}, prompt_len

    # Text models score every label's continuation in one packed row (below); a multimodal model keeps the
    # batched path, because its positions are not plain offsets after the prompt.
    packs_labels = True

    def _continuations_packed(self, prefix_cache: Any, prompt_len: int, sequences: list[list[int]]) -> list[float]:
        """Log-likelihood of tokens 2..k of each sequence given the prompt, in one forward pass over a token trie.

        Every distinct label prefix is fed once, as one row after the prompt: a 4D mask lets each token see the
        prompt and its own ancestors only, and its position is the prompt length plus its depth. So shared label
        prefixes cost one token, and no row is padded to the longest label (image-scene labels: 86 tokens
        instead of 275).
        """
        import torch

        node_of: dict[tuple[int, ...], int] = {}  # prefix (tokens 1..j) -> index in the packed row
        parents: list[int] = []
        for seq in sequences:
            for j in range(1, len(seq)):
                prefix = tuple(seq[:j])
                if prefix not in node_of:
                    node_of[prefix] = len(parents)
                    parents.append(node_of.get(prefix[:-1], -1))
        n = len(parents)
        tokens = [prefix[-1] for prefix in node_of]
        depth = [len(prefix) - 1 for prefix in node_of]
        visible = torch.zeros(n, n, dtype=torch.bool)
        for i, parent in enumerate(parents):
            visible[i, i] = True
            if parent >= 0:
                visible[i] |= visible[parent]  # parents come first, so their rows are complete
        dtype = self.model.dtype
        mask = torch.full((n, prompt_len + n), torch.finfo(dtype).min, dtype=dtype)
        mask[:, :prompt_len] = 0
        mask[:, prompt_len:].masked_fill_(visible, 0)
        # The pass appends the labels to the prompt's cache; nothing reuses that cache afterwards.
        logits = self.model(
            input_ids=torch.tensor([tokens], device=self._device),
            attention_mask=mask[None, None].to(self._device),
            position_ids=torch.tensor([[prompt_len + d for d in depth]], device=self._device),
            past_key_values=prefix_cache, use_cache=True).logits
        logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        return [sum(float(logprobs[node_of[tuple(seq[:j])], seq[j]]) for j in range(1, len(seq)))
                for seq in sequences]

    def _forget_positions(self) -> None:
        """Drop position offsets a multimodal model kept from an earlier call (Qwen2-VL's `rope_deltas`)."""
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None

    def _continuations(self, prefix_cache: Any, sequences: list[list[int]]) -> list[float]:
        """Log-likelihood of tokens 2..k of each sequence given the prompt and its earlier tokens, in one batch."""
        import torch

        width = max(len(s) for s in sequences) - 1
        pad = self._pad_id()
        # Feed tokens 1..k-1 (right-padded); logits at step j score token j+1. Padding sits after every real
        # token, so the causal mask already keeps it out of the real positions: no attention mask needed, and
        # every row continues at the same positions, which the model derives from the cache length.
        inputs = torch.tensor([s[:-1] + [pad] * (width - len(s) + 1) for s in sequences], device=self._device)
        cache = copy.deepcopy(prefix_cache)  # the forward pass appends to the cache in place
        cache.batch_repeat_interleave(len(sequences))
        logits = self.model(input_ids=inputs, past_key_values=cache, use_cache=True).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for row, seq in enumerate(sequences):
            targets = torch.tensor(seq[1:], device=self._device)
            out.append(float(logprobs[row, torch.arange(len(seq) - 1), targets].sum()))
        return out

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        import gc

        gc.collect()


class _SchemaGuide:
    """A transformers logits processor (batch of one) that masks every token the JSON-schema grammar forbids;
    the end token is allowed once the JSON is complete."""

    def __init__(self, matcher: Any, prompt_len: int, vocab_size: int) -> None:
        self.matcher, self.prompt_len, self.vocab_size = matcher, prompt_len, vocab_size
        self.mask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch
        from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask

        if input_ids.shape[0] != 1:
            raise ModelError("schema-constrained generation takes one chat at a time")
        if input_ids.shape[1] > self.prompt_len and not self.matcher.consume_token(int(input_ids[0, -1])):
            raise ModelError(f"the schema grammar rejected a token: {self.matcher.get_error()}")
        width = scores.shape[-1]
        if self.mask is None:
            self.mask = allocate_token_bitmask(1, max(width, self.vocab_size))
        fill_next_token_bitmask(self.matcher, self.mask, 0)
        bits = np.unpackbits(self.mask.numpy().view(np.uint8), bitorder="little")[:width].astype(bool)
        bits[self.vocab_size:] = False  # logits past the tokenizer's vocabulary (padding rows) never win
        scores[:, ~torch.from_numpy(bits).to(scores.device)] = float("-inf")
        return scores


def _apply_adapter(model: Any, adapter: str) -> Any:
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ModelError("loading an adapter needs peft: pip install peft") from e
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ModelError(f"{adapter} is not a peft adapter folder (no adapter_config.json)")
    logger.info("applying peft adapter %s", adapter)
    return PeftModel.from_pretrained(model, adapter)
