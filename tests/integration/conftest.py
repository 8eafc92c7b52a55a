"""Fixtures shared by the discovery-session tests."""

from __future__ import annotations

import pytest

from kdsl.config import Settings


@pytest.fixture
def home(tmp_path, monkeypatch, mdsirc_path) -> Settings:
    """A fresh KDSL_HOME for sessions on the real MDSIRC data (skipped when the data is absent)."""
    monkeypatch.setenv("KDSL_HOME", str(tmp_path / "home"))
    return Settings()
