"""The collaboration of a trained decider: its rules and each policy's fitted arbiter, kept in the decider folder.

`kdsl eval` measures the rules on the verify split and fits the arbiters there, then writes `collaboration.json`
next to the decider; the predictor reads it back to serve the decider together with the rules.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kdsl._internal._atomic import write_text_atomic
from kdsl.agents.arbiter import Arbiter, ArbiterConfig
from kdsl.errors import ConfigError
from kdsl.rules import RuleSet

COLLABORATION_FILE = "collaboration.json"


class ArbiterState(BaseModel):
    model_config = ConfigDict(frozen=True)

    config: ArbiterConfig
    weights: dict[str, float] = {}


class Collaboration(BaseModel):
    """What prediction needs besides the decider: the rules with their verify statistics and each policy's arbiter
    settings (the stacked weights fitted on verify). Written next to the decider by `kdsl eval`."""

    model_config = ConfigDict(frozen=True)

    rules: RuleSet
    arbiters: dict[str, ArbiterState]

    def arbiter(self, policy: str) -> Arbiter:
        key = policy if policy.startswith("together:") else f"together:{policy}"
        if key not in self.arbiters:
            raise ConfigError(f"no arbiter for policy {policy!r}; known: {', '.join(self.arbiters)}")
        state = self.arbiters[key]
        return Arbiter(state.config, state.weights)

    def save(self, folder: Path) -> Path:
        return write_text_atomic(folder / COLLABORATION_FILE, self.model_dump_json(indent=1))

    @classmethod
    def load(cls, folder: Path) -> Collaboration | None:
        path = folder / COLLABORATION_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None
