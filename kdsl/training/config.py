"""How a decider is post-trained: the base model, the LoRA shape, the optimiser budget, augmentation and seed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kdsl.agents.decider_prompt import PromptConfig

DEFAULT_BASE = "qwen2.5-coder-0.5b-instruct"


class TrainConfig(BaseModel):
    """Defaults fit a CPU: a 0.5B model, LoRA on the attention projections of the upper layers, one epoch.

    Only the upper `layers_fraction` of the blocks get adapters: backpropagation then stops there, which makes a
    step about a third cheaper on a CPU at little cost in accuracy for a label-only objective.
    """

    model_config = ConfigDict(frozen=True)

    base_model: str = Field(DEFAULT_BASE, description="Pack name, transformers folder, .gguf or Hugging Face id.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training samples (fractions allowed).")
    learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="Samples per optimiser step (gradient accumulation).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers_fraction: float = Field(0.5, gt=0, le=1, description="Share of the top transformer blocks adapted.")
    augment_p: float = Field(0.1, ge=0, lt=1, description="Probability of dropping each dialogue / OCR line.")
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch's default.")
