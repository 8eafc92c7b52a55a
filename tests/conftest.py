"""Shared fixtures: the real data beside the repository (../shared/data), loaded once per test session."""

from __future__ import annotations

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
