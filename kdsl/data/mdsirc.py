"""Loader for the WWW 2025 MDSIRC (Taobao) challenge data: dialogue-intent and image-scene samples.

Each item is `{"id", "instruction", "input", "output", "image": [...]}`; the dialogue, the `<image>` positions and
the candidate labels live inside the instruction text, so this module parses that text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kdsl.data.sample import Dataset, Sample, Turn
from kdsl.data.validation import Collector, validate_samples
from kdsl.errors import DataError

DIALOGUE_TASK = "dialogue_intent"
IMAGE_TASK = "image_scene"

_DIALOGUE_START = "<用户与客服的对话 START>"
_DIALOGUE_END = "<用户与客服的对话 END>"
_ROLE_PREFIXES = {"用户:": "user", "客服:": "agent"}
_IMAGE_TOKEN = "<image>"
# The candidate list is the first JSON array after the marker; the dialogue text before it may hold brackets too.
_DIALOGUE_LABELS = re.compile(r"分类标签为[:：]\s*(\[.*?\])", re.S)
_IMAGE_LABELS = re.compile(r"分类标签[:：]\s*(\[.*?\])", re.S)


class _ParseError(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _candidates(instruction: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    m = pattern.search(instruction)
    if not m:
        raise _ParseError("no_candidates", "the instruction has no candidate label list")
    try:
        labels = json.loads(m.group(1))
    except json.JSONDecodeError as e:
        raise _ParseError("bad_candidates", f"the candidate label list is not valid JSON ({e.msg})") from e
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise _ParseError("bad_candidates", "the candidate label list must be non-empty strings")
    return tuple(labels)


def parse_dialogue(instruction: str) -> list[Turn]:
    """Turns of a dialogue-intent instruction. `<image>` user turns get consecutive image indices."""
    start, end = instruction.find(_DIALOGUE_START), instruction.find(_DIALOGUE_END)
    if start < 0 or end < start:
        raise _ParseError("no_dialogue", f"the instruction lacks {_DIALOGUE_START} ... {_DIALOGUE_END}")
    body = instruction[start + len(_DIALOGUE_START) : end]
    turns: list[dict] = []
    n_images = 0
    for line in body.split("\n"):
        role = next((r for p, r in _ROLE_PREFIXES.items() if line.startswith(p)), None)
        if role is None:
            if turns and line:  # a continuation line of a multi-line utterance
                turns[-1]["text"] += "\n" + line
            continue
        text = line.split(":", 1)[1].strip()
        if text == _IMAGE_TOKEN:
            turns.append({"role": role, "text": "", "image": n_images})
            n_images += 1
        else:
            turns.append({"role": role, "text": text})
    return [Turn(**t) for t in turns]


def _to_sample(item: dict, images_dir: Path) -> Sample:
    for key in ("id", "instruction"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise _ParseError("missing_field", f"field {key!r} is missing or not a non-empty string")
    instruction: str = item["instruction"]
    image_names = item.get("image") or []
    if not isinstance(image_names, list) or not all(isinstance(x, str) for x in image_names):
        raise _ParseError("bad_images", "field 'image' must be a list of file names")
    images = tuple(str((images_dir / name).resolve()) for name in image_names)
    label = item.get("output") or None
    if label is not None and not isinstance(label, str):
        raise _ParseError("bad_label", f"field 'output' must be the label as a string, not {type(label).__name__}")
    if instruction.lstrip().startswith("Picture 1:"):
        if len(images) != 1:
            raise _ParseError("bad_images", f"an image-scene sample needs exactly 1 image, found {len(images)}")
        return Sample(
            id=item["id"],
            task=IMAGE_TASK,
            turns=(Turn(role="user", image=0),),
            images=images,
            label=label,
            candidates=_candidates(instruction, _IMAGE_LABELS),
        )
    turns = parse_dialogue(instruction)
    n_refs = sum(t.image is not None for t in turns)
    if n_refs != len(images):
        raise _ParseError(
            "bad_images", f"the dialogue shows {n_refs} <image> turn(s) but the sample lists {len(images)} image(s)"
        )
    return Sample(
        id=item["id"],
        task=DIALOGUE_TASK,
        turns=tuple(turns),
        images=images,
        label=label,
        candidates=_candidates(instruction, _DIALOGUE_LABELS),
    )


def load_mdsirc(path: str | Path, *, skip_invalid: bool = False, check_images: bool = True) -> Dataset:
    """Read an MDSIRC folder (with train.json and images/) or one JSON file in its format.

    Images are looked up in `images/` beside the JSON file. Raises DataError on the first bad item unless
    `skip_invalid`, which skips it and records it in `Dataset.skipped`.
    """
    path = Path(path)
    file = path / "train.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError("no MDSIRC train.json here (expected a folder with train.json and images/)", path=str(path))
    try:
        items = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON ({e})", path=str(file), code="broken_json") from e
    if not isinstance(items, list):
        raise DataError("expected a JSON list of samples", path=str(file), code="broken_json")

    collector = Collector(file, skip_invalid=skip_invalid)
    images_dir = file.parent / "images"
    samples: list[Sample] = []
    label_spaces: dict[str, dict[str, None]] = {}  # dicts keep first-seen order
    for n, item in enumerate(items):
        sample_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            collector.reject("bad_item", f"item {n} is not a JSON object")
            continue
        try:
            sample = _to_sample(item, images_dir)
        except _ParseError as e:
            collector.reject(e.code, e.reason, sample_id or f"#{n}")
            continue
        samples.append(sample)
        label_spaces.setdefault(sample.task, {}).update(dict.fromkeys(sample.candidates))
    spaces = {task: tuple(labels) for task, labels in label_spaces.items()}
    kept = validate_samples(samples, spaces, collector, check_images=check_images)
    return Dataset(
        name="www2025-mdsirc", samples=tuple(kept), label_spaces=spaces, source=str(file),
        skipped=tuple(collector.items),
    )
