"""The decider's prompt: one sample's text (dialogue, image text, visual labels, optional rule hints) as chat messages.

Training and prediction build the prompt with the same function and the same `PromptConfig`, so the label
likelihoods the decider reads at prediction time are those the adapter was trained to produce. Fields are cut to a
character budget (keeping the latest dialogue and the first OCR lines) to bound tokens per sample on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from kdsl.data.mdsirc import DIALOGUE_TASK, IMAGE_TASK
from kdsl.models.base import Message
from kdsl.tools.features import SampleFeatures

# What each known task asks, in the language of its data; unknown tasks get the generic English line.
TASK_INSTRUCTIONS: dict[str, str] = {
    DIALOGUE_TASK: "任务: 判断用户在这段淘宝客服对话中的意图。",
    IMAGE_TASK: "任务: 判断用户发送的图片属于哪种场景。",
}
GENERIC_INSTRUCTION = "Task: classify the intent of this customer-service dialogue ({task})."
SYSTEM = "You are a precise intent classifier. Answer with the label only."


class PromptConfig(BaseModel):
    """Character budgets per field and what goes into the prompt."""

    model_config = ConfigDict(frozen=True)

    user_chars: int = Field(300, ge=0, description="Latest user text kept (characters).")
    agent_chars: int = Field(100, ge=0, description="Latest agent text kept.")
    image_text_chars: int = Field(200, ge=0, description="First OCR text kept.")
    image_labels: int = Field(3, ge=0, description="Visual classes kept, best first.")
    with_candidates: bool = Field(False, description="List the candidate labels in the prompt (longer, slower).")
    with_rules: bool = Field(False, description="Add the labels of the rules that fire on the sample as hints.")


def _tail(text: str, n: int) -> str:
    return text[-n:] if len(text) > n else text


def _head(text: str, n: int) -> str:
    return text[:n] if len(text) > n else text


def build_messages(
    task: str,
    features: SampleFeatures,
    config: PromptConfig,
    *,
    candidates: Sequence[str] = (),
    rule_hints: Sequence[str] = (),
) -> list[Message]:
    """The chat messages the decider sees for one sample; the label is the assistant's answer."""
    lines = [TASK_INSTRUCTIONS.get(task, GENERIC_INSTRUCTION.format(task=task))]
    if features.user_text and config.user_chars:
        lines.append("用户: " + _tail(features.user_text, config.user_chars).replace("\n", " / "))
    if features.agent_text and config.agent_chars:
        lines.append("客服: " + _tail(features.agent_text, config.agent_chars).replace("\n", " / "))
    if features.image_text and config.image_text_chars:
        lines.append("图片文字: " + _head(features.image_text, config.image_text_chars).replace("\n", " "))
    if features.image_labels and config.image_labels:
        lines.append("图片内容: " + ", ".join(features.image_labels[: config.image_labels]))
    if config.with_candidates and candidates:
        lines.append("候选标签: " + ", ".join(candidates))
    if config.with_rules and rule_hints:
        lines.append("规则提示: " + ", ".join(dict.fromkeys(rule_hints)))
    lines.append("标签:")
    return [Message(role="system", content=SYSTEM), Message(role="user", content="\n".join(lines))]
