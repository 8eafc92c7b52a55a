"""Decider label scoring on real MDSIRC prompts: seconds per sample with the packed token-trie pass against the
batched (padded) pass, and how far apart their scores are.

Label scoring is the cost of `kdsl eval`, `kdsl seesaw` and serving: every sample scores each of its 23-25
candidate labels. Both paths share the prompt's KV cache; they differ in how the labels' continuations run.

    python benchmarks/label_scoring.py --decider joint-e1 --samples 8 --threads 1
    python benchmarks/label_scoring.py --samples 8          # the default pack, zero-shot, no adapter
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from kdsl.agents.decider import Decider, DeciderCard, decider_folder
from kdsl.agents.decider_prompt import PromptConfig
from kdsl.config import Settings
from kdsl.models import load_backend
from kdsl.training.config import DEFAULT_BASE
from kdsl.training.workflow import prepare


def _card(args: argparse.Namespace, settings: Settings, tasks: list[str], spaces: dict) -> tuple[DeciderCard, dict]:
    if args.decider:
        folder = decider_folder(args.decider, settings)
        card = DeciderCard.load(folder)
        return card, {"adapter": folder / card.adapter} if card.adapter else {}
    card = DeciderCard(name="zero-shot", backend="hf", base_model=DEFAULT_BASE, tasks=tuple(tasks), label_spaces=spaces,
                       prompt=PromptConfig(), label_suffix="<|im_end|>")
    return card, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decider", default=None, help="a trained decider (name or folder); default: the base pack")
    parser.add_argument("--samples", type=int, default=8, help="test samples per task")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/www2025-mdsirc"))
    args = parser.parse_args()

    settings = Settings()
    prepared = prepare(args.data, settings, progress=False)
    tasks = list(prepared.dataset.tasks)
    test = prepared.part("test")
    samples = [s for task in tasks for s in [x for x in test.samples if x.task == task][:args.samples]]
    spaces = {t: tuple(sorted({c for s in prepared.dataset.samples if s.task == t for c in s.candidates}))
              for t in tasks}
    card, options = _card(args, settings, tasks, spaces)
    backend = load_backend(f"{card.backend}:{card.base_model}", settings, threads=args.threads, **options)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"model={card.base_model}, adapter={bool(options)}, {len(samples)} samples")

    results = {}
    for packed in (True, False):
        backend.packs_labels = packed  # an instance attribute shadows the class default
        decider = Decider(backend, card, folder=None)  # no folder: nothing cached between the two runs
        decider.log_likelihoods(samples[:1], prepared.features)  # warm-up (first call allocates)
        decider = Decider(backend, card, folder=None)
        seconds = []
        scores = []
        for sample in samples:
            start = time.perf_counter()
            scores.append(decider.log_likelihoods([sample], prepared.features)[0])
            seconds.append(time.perf_counter() - start)
        results[packed] = (seconds, scores)
    rows = []
    for packed, (seconds, _) in results.items():
        rows.append({"path": "packed trie" if packed else "batched, padded",
                     "s_per_sample_mean": round(statistics.mean(seconds), 3),
                     "s_per_sample_p50": round(statistics.median(seconds), 3)})
    diff = max(float(abs(a - b).max()) for a, b in zip(results[True][1], results[False][1], strict=True))
    same_top = sum(int(a.argmax() == b.argmax()) for a, b in zip(results[True][1], results[False][1], strict=True))
    for row in rows:
        print(json.dumps(row))
    speedup = rows[1]["s_per_sample_mean"] / rows[0]["s_per_sample_mean"]
    print(f"speed-up {speedup:.2f}x; max |score difference| {diff:.2e} nats; same top label on "
          f"{same_top}/{len(samples)} samples")


if __name__ == "__main__":
    main()
