"""Model backends on this machine: load seconds, generation tokens/s (one chat, and --batch chats at once),
label-scoring seconds per sample.

The label-scoring task is MDSIRC dialogue intent (23 candidate labels, zero-shot), read from --data when it is
there, else a synthetic 23-label task. Accuracy is printed too, as a first hint for choosing the defaults.
Batched generation runs on the backends that batch (hf, vllm); llama_cpp decodes one chat at a time.

    python benchmarks/models.py --packs smollm2-135m-instruct qwen2.5-coder-0.5b-instruct --samples 10

vLLM lives in its own environment (`make vllm-env`), so its rows come from that interpreter:

    .venv-vllm/bin/python benchmarks/models.py --backends vllm [--vllm-compile]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

from kdsl.config import Settings
from kdsl.errors import ModelError
from kdsl.models import Message, ModelBackend, hf_path, load_backend, pull

GEN_PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a short rule that detects a customer asking about delivery time.",
    "List three fruits and their colours.",
]
INSTRUCTION = "你是一个电商客服专家，请根据用户与客服的多轮对话判断用户的意图分类标签。"
SYNTHETIC_LABELS = [
    "refund", "delivery time", "order status", "cancel order", "change address", "payment failed", "coupon",
    "product size", "product material", "warranty", "installation", "return policy", "invoice", "stock",
    "price match", "gift wrap", "damaged item", "wrong item", "missing item", "account login", "membership",
    "complaint", "greeting",
]


def _tasks(data: Path, n: int) -> tuple[list[list[Message]], list[list[str]], list[str | None]]:
    """(chat prompts, candidate labels, gold labels) for n samples of a 23-label task."""
    prompts, candidates, gold = [], [], []
    if (data / "train.json").is_file():
        from kdsl.data import load_mdsirc

        dataset = load_mdsirc(data, check_images=False, skip_invalid=True)
        samples = [s for s in dataset.samples if s.task == "dialogue_intent" and s.label][:n]
        for s in samples:
            dialogue = "\n".join(f"{'用户' if t.role == 'user' else '客服'}: {t.text or '<image>'}" for t in s.turns)
            prompts.append([
                Message(role="system", content=INSTRUCTION
                        + f"可选标签：{json.dumps(list(s.candidates), ensure_ascii=False)}。只输出标签。"),
                Message(role="user", content=dialogue[-1500:]),
            ])
            candidates.append(list(s.candidates))
            gold.append(s.label)
    while len(prompts) < n:  # synthetic fallback when the data is not there
        prompts.append([Message(role="system", content=f"Classify the intent. Labels: {', '.join(SYNTHETIC_LABELS)}."),
                        Message(role="user", content=f"When will my parcel number {len(prompts)} arrive?")])
        candidates.append(SYNTHETIC_LABELS)
        gold.append("delivery time")
    return prompts, candidates, gold


def _generate_batch(backend: ModelBackend, chats: list[list[Message]], max_tokens: int) -> tuple[int, float] | None:
    """(completion tokens, wall seconds) of greedy replies to all chats at once; None where the backend does not
    batch."""
    if hasattr(backend, "generate_batch"):  # vllm: one engine batch
        start = time.perf_counter()
        gens = backend.generate_batch(chats, max_tokens=max_tokens)
        return sum(g.completion_tokens for g in gens), time.perf_counter() - start
    if backend.name == "hf":
        return _hf_generate_batch(backend, chats, max_tokens)
    return None


def _hf_generate_batch(backend, chats: list[list[Message]], max_tokens: int) -> tuple[int, float]:
    """transformers' own batched `generate`, left-padded, on the model and tokenizer the hf backend loaded."""
    import torch

    tokenizer = backend.tokenizer
    texts = [tokenizer.apply_chat_template([m.model_dump() for m in chat], add_generation_prompt=True, tokenize=False)
             for chat in chats]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = backend._pad_id()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    try:
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    start = time.perf_counter()
    with torch.inference_mode():
        output = backend.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, temperature=None,
                                        top_k=None, top_p=None, pad_token_id=pad)
    seconds = time.perf_counter() - start
    eos = backend._eos_ids()
    tokens = 0
    for row in output[:, inputs["input_ids"].shape[1]:].tolist():  # count up to each row's first end token
        tokens += next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
    return tokens, seconds


def bench(backend_name: str, pack: str, settings: Settings, args: argparse.Namespace) -> dict:
    row: dict = {"backend": backend_name, "pack": pack}
    options: dict = {"threads": args.threads}
    if backend_name == "vllm" and args.vllm_compile:
        options["enforce_eager"] = False
        row["backend"] = "vllm (compiled)"
    if backend_name in ("hf", "vllm"):
        start = time.perf_counter()
        hf_path(pack, settings)  # conversion happens once; time it apart from loading
        row["convert_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    try:
        backend: ModelBackend = load_backend(f"{backend_name}:{pack}", settings, **options)
    except ModelError as e:  # e.g. vllm outside .venv-vllm: report it and go on with the other backends
        row["error"] = str(e)
        return row
    row["load_s"] = round(time.perf_counter() - start, 2)
    try:
        backend.generate([Message(role="user", content="Hi")], max_tokens=2)  # warm-up
        gens = [backend.generate([Message(role="user", content=p)], max_tokens=args.gen_tokens) for p in GEN_PROMPTS]
        tokens = sum(g.completion_tokens for g in gens)
        row["gen_tok_s"] = round(tokens / sum(g.seconds for g in gens), 1)
        row["gen_tokens"] = tokens
        chats = [[Message(role="user", content=GEN_PROMPTS[i % len(GEN_PROMPTS)])] for i in range(args.batch)]
        batched = _generate_batch(backend, chats, args.gen_tokens)
        if batched is not None:
            row["batch"] = args.batch
            row["gen_tok_s_batch"] = round(batched[0] / batched[1], 1)
        prompts, candidates, gold = _tasks(Path(args.data), args.samples)
        seconds, correct, correct_norm, prompt_tokens = [], 0, 0, []
        for prompt, labels, answer in zip(prompts, candidates, gold, strict=True):
            scores = backend.score_labels(prompt, labels)
            seconds.append(scores.seconds)
            prompt_tokens.append(scores.prompt_tokens)
            correct += scores.best == answer
            correct_norm += scores.ranking(normalize=True)[0] == answer
        row["labels"] = len(candidates[0])
        row["score_s_per_sample"] = round(statistics.mean(seconds), 3)
        row["score_s_first"] = round(seconds[0], 3)
        row["prompt_tokens_mean"] = round(statistics.mean(prompt_tokens))
        row["zero_shot_acc"] = round(correct / len(gold), 3)
        row["zero_shot_acc_norm"] = round(correct_norm / len(gold), 3)  # ranked by mean log-prob per token
    finally:
        backend.close()
        del backend
        gc.collect()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", nargs="+", default=["smollm2-135m-instruct"])
    parser.add_argument("--backends", nargs="+", default=["llama_cpp", "hf"])
    parser.add_argument("--samples", type=int, default=10, help="label-scoring samples per backend")
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="chats generated at once for gen_tok_s_batch")
    parser.add_argument("--vllm-compile", action="store_true",
                        help="vllm with torch.compile even on CPU, where the backend runs eager by default")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/www2025-mdsirc"))
    parser.add_argument("--home", default=None, help="KDSL_HOME (default: the usual one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(home=Path(args.home)) if args.home else Settings()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, KDSL_HOME={settings.home}")
    rows = []
    for pack in args.packs:
        pull(pack, settings, progress=False)
        for backend_name in args.backends:
            row = bench(backend_name, pack, settings, args)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    keys = ["backend", "pack", "load_s", "gen_tok_s", "gen_tok_s_batch", "labels", "score_s_per_sample",
            "prompt_tokens_mean", "zero_shot_acc", "zero_shot_acc_norm", "error"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
