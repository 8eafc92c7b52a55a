"""The vllm backend's parts that need no vLLM: the error without it, adapter checks, log-probability reading.

The backend itself runs in tests/integration/test_vllm.py, in the .venv-vllm environment (`make vllm-env`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from kdsl.errors import ModelError
from kdsl.models import backend_class, load_backend
from kdsl.models.vllm import VLLMBackend, _adapter_rank, _cpu_threads, _label_logprob


def test_registered_under_vllm() -> None:
    assert backend_class("vllm") is VLLMBackend
    assert VLLMBackend.supports_schema


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in this environment")
def test_without_vllm_the_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_NO_USAGE_STATS", raising=False)  # the backend sets it; restored after the test
    with pytest.raises(ModelError, match=r"its own environment: make vllm-env.*openai backend"):
        load_backend("vllm:smollm2-135m-instruct")


def test_adapter_rank(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a peft adapter folder"):
        _adapter_rank(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "rank_pattern": {"q": 12}}))
    assert _adapter_rank(str(tmp_path)) == 12
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ModelError, match="LoRA adapters only"):
        _adapter_rank(str(tmp_path))


def _entry(logprob: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=logprob)


def test_label_logprob_reads_the_label_positions_only() -> None:
    # Positions 0..2 are the prompt (position 0 has no log-probability), 3..4 the label tokens 7 and 8.
    logprobs = [None, {5: _entry(-9.0)}, {6: _entry(-9.0)}, {7: _entry(-0.5)}, {8: _entry(-1.25)}]
    assert _label_logprob(logprobs, 3, [7, 8]) == pytest.approx(-1.75)
    assert _label_logprob(logprobs, 3, [7, 9]) is None  # not the token asked for: never a wrong number
    assert _label_logprob(logprobs[:4], 3, [7, 8]) is None
    assert _label_logprob(None, 3, [7]) is None


def test_cpu_threads_pins_while_the_engine_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    with _cpu_threads(1):
        assert len(os.environ["VLLM_CPU_OMP_THREADS_BIND"].split(",")) == 1
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # the user's choice wins
    with _cpu_threads(2):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    with pytest.raises(ValueError, match="threads must be >= 1"):
        monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
        with _cpu_threads(0):
            pass
