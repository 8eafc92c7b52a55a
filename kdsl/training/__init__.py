"""LoRA post-training of the decider, its augmentation, and the seesaw diagnostic."""

from kdsl.training.config import DEFAULT_BASE, TrainConfig
from kdsl.training.lora import TrainResult, end_of_turn, train_decider, training_ids

__all__ = ["DEFAULT_BASE", "TrainConfig", "TrainResult", "end_of_turn", "train_decider", "training_ids"]
