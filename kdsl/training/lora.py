"""LoRA post-training of the decider (peft on a transformers causal LM), loss on the label tokens only.

Each sample becomes (decider prompt through the chat template) + (label + end-of-turn); the loss masks the prompt,
so the adapter learns to answer with the label, which is exactly what `Decider` scores. The adapter is written in
peft's format, loadable by transformers + peft and by vLLM (`--lora-modules`).
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kdsl.agents.decider import ADAPTER, CALIBRATION, SCORE_CACHE, DeciderCard
from kdsl.agents.decider_prompt import build_messages
from kdsl.config import Settings
from kdsl.data.sample import Dataset
from kdsl.errors import ConfigError, ModelError
from kdsl.models.registry import resolve_hf
from kdsl.tools.features import FeatureTable, SampleFeatures
from kdsl.training.augment import augment
from kdsl.training.config import TrainConfig

logger = logging.getLogger(__name__)

StepHook = Callable[[int, int, float], None]  # (step, total steps, loss)


class TrainResult(BaseModel):
    """What a training run did."""

    model_config = ConfigDict(frozen=True)

    folder: str
    steps: int
    samples_seen: int
    seconds: float
    losses: tuple[float, ...] = Field(description="Mean label-token loss of each optimiser step.")
    first_loss: float
    last_loss: float


def _select_layers(model: Any, fraction: float) -> list[int] | None:
    n = getattr(model.config, "num_hidden_layers", None)
    if not n or fraction >= 1:
        return None
    k = max(1, round(n * fraction))
    return list(range(n - k, n))


class _Example(BaseModel):
    model_config = ConfigDict(frozen=True)

    sample_id: str
    task: str
    label: str
    features: SampleFeatures
    candidates: tuple[str, ...]


def _tokenize(tokenizer: Any, messages: list[Any], target: str) -> tuple[list[int], list[int]]:
    """Prompt ids exactly as `HFBackend.score_labels` builds them (chat template + generation header), and the
    target's ids as it tokenizes a label: training and scoring must see the same tokens."""
    prompt = tokenizer.apply_chat_template([m.model_dump() for m in messages], add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
    return list(prompt), tokenizer(target, add_special_tokens=False)["input_ids"]


def end_of_turn(tokenizer: Any) -> str:
    """The text that ends an assistant answer in this model's chat template (what generation stops on)."""
    eos = tokenizer.eos_token
    if not eos:
        raise ModelError("the base model's tokenizer has no end-of-sequence token; it cannot be post-trained here")
    return eos


def train_decider(
    dataset: Dataset,
    features: FeatureTable,
    folder: Path,
    config: TrainConfig | None = None,
    *,
    settings: Settings | None = None,
    name: str | None = None,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Post-train a LoRA decider on the labeled samples of `dataset` and write the decider folder.

    The folder gets `adapter/` (peft), `decider.json` (the card); an earlier calibration and score cache there
    are removed, since they belong to the old adapter.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or TrainConfig()
    labeled = [s for s in dataset.samples if s.label is not None]
    if not labeled:
        raise ConfigError(f"dataset {dataset.name!r} has no labeled samples to train on")
    missing = [s.id for s in labeled if s.id not in features]
    if missing:
        raise ConfigError(f"{len(missing)} training samples have no features (e.g. {missing[0]!r}); build them with "
                          f"`kdsl features build`")
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    resolved = resolve_hf(config.base_model, settings)
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{config.base_model} has no chat template; post-train an instruction model")
    model = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=torch.float32, local_files_only=True)
    model = get_peft_model(model, LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), layers_to_transform=_select_layers(model, config.layers_fraction),
        task_type="CAUSAL_LM",
    ))
    model.train()
    suffix = end_of_turn(tokenizer)
    tasks = tuple(sorted({s.task for s in labeled}))
    examples = [_Example(sample_id=s.id, task=s.task, label=s.label, features=features[s.id],  # type: ignore[arg-type]
                         candidates=s.candidates or dataset.label_spaces[s.task]) for s in labeled]

    total = max(1, math.ceil(len(examples) * config.epochs))
    steps = math.ceil(total / config.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, int(steps * config.warmup_ratio))
    # Linear warm-up, then linear decay to zero at the last step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: (i + 1) / warmup if i < warmup else max(0.0, (steps - i) / max(1, steps - warmup)))

    order: list[_Example] = []
    while len(order) < total:
        epoch = list(examples)
        rng.shuffle(epoch)
        order.extend(epoch)
    order = order[:total]

    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        batch = order[step * config.batch_size:(step + 1) * config.batch_size]
        step_loss = 0.0
        for ex in batch:
            feats = augment(ex.features, config.augment_p, rng)
            messages = build_messages(ex.task, feats, config.prompt, candidates=ex.candidates)
            prompt, target = _tokenize(tokenizer, messages, ex.label + suffix)
            ids = torch.tensor([prompt + target])
            labels = torch.tensor([[-100] * len(prompt) + target])
            loss = model(input_ids=ids, labels=labels).loss
            (loss / len(batch)).backward()
            step_loss += float(loss.detach()) / len(batch)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(step_loss)
        if on_step is not None:
            on_step(step + 1, steps, step_loss)
    seconds = time.perf_counter() - start

    folder.mkdir(parents=True, exist_ok=True)
    adapter_dir = folder / ADAPTER
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    model.save_pretrained(str(adapter_dir))
    for stale in (CALIBRATION, SCORE_CACHE):
        (folder / stale).unlink(missing_ok=True)
    result = TrainResult(folder=str(folder), steps=steps, samples_seen=total, seconds=seconds, losses=tuple(losses),
                         first_loss=losses[0], last_loss=losses[-1])
    DeciderCard(
        name=name or folder.name, base_model=str(config.base_model), adapter=ADAPTER, tasks=tasks,
        label_spaces={t: tuple(dataset.label_spaces[t]) for t in tasks}, prompt=config.prompt, label_suffix=suffix,
        training={"config": config.model_dump(mode="json"), "data": dataset.name, "fingerprint": dataset.fingerprint(),
                  "n_train": len(labeled), "steps": steps, "seconds": round(seconds, 1),
                  "losses": [round(x, 4) for x in losses]},
    ).save(folder)
    logger.info("trained %s: %d steps in %.0f s, loss %.3f -> %.3f", folder, steps, seconds, losses[0], losses[-1])
    return result


def training_ids(dataset: Dataset, tasks: Sequence[str] | None) -> list[str]:
    """The ids of the labeled samples of `tasks` (all tasks when None)."""
    wanted = set(tasks) if tasks else set(dataset.tasks)
    unknown = wanted - set(dataset.tasks)
    if unknown:
        raise ConfigError(f"dataset {dataset.name!r} has no task {sorted(unknown)[0]!r}; tasks: "
                          f"{', '.join(dataset.tasks)}")
    return [s.id for s in dataset.samples if s.task in wanted and s.label is not None]
