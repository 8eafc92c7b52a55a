"""What a session's nodes share: its config and settings, the progress hook, and in-memory views of the files the
nodes write (features, split parts ready to score rules on, the decider's cross-fitted predictions)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdsl.agents.decider import LabelDistribution
from kdsl.config import Settings
from kdsl.data.splits import Split
from kdsl.graph.config import SessionConfig
from kdsl.graph.layout import (
    DECIDER_PREDICTIONS,
    read_json,
)
from kdsl.graph.state import SessionState
from kdsl.rules import RuleEngine
from kdsl.search import (
    SearchProgress,
)
from kdsl.tools.features import FeatureTable

ProgressHook = Callable[[SearchProgress], None]


class Part:
    """One split part of the task, ready to score rules on: engine, sample ids and gold labels (labeled only)."""

    def __init__(self, engine: RuleEngine, ids: list[str], gold: list[str]):
        self.engine, self.ids, self.gold = engine, ids, gold


class SessionContext:
    """The session's config, settings and progress hook, and caches of what its files hold (read once per run)."""

    def __init__(self, config: SessionConfig, settings: Settings, *, on_iteration: ProgressHook | None = None):
        self.config = config
        self.settings = settings
        self.on_iteration = on_iteration
        self._parts: dict[tuple[str, str, int | None, bool, tuple[int, ...]], Part] = {}
        self._cache: dict[tuple[str, str], Any] = {}
        self._tables: dict[str, FeatureTable] = {}

    def table(self, state: SessionState) -> FeatureTable:
        path = state["features_path"]
        if path not in self._tables:
            self._tables[path] = FeatureTable.load(path)
        return self._tables[path]

    def part(self, state: SessionState, part: str, fold: int | None = None, held: bool = False,
              exclude: tuple[int, ...] = ()) -> Part:
        """The labeled samples of a split part; with `fold`, only the search samples of that cross-fitting fold
        (`held`) or of every other fold; with `exclude`, the search samples outside those folds."""
        key = (state["session_dir"], part, fold, held, exclude)
        if key not in self._parts:
            split = Split.load(state["split_path"])
            gold_by_id: dict[str, str | None] = read_json(Path(state["gold_path"]))["gold"]
            ids = [i for i in split.ids(part) if gold_by_id.get(i) is not None]  # type: ignore[arg-type]
            folds = self.decider(state)["folds"] if fold is not None or exclude else {}
            if fold is not None:
                ids = [i for i in ids if (folds[i] == fold) == held]
            if exclude:
                ids = [i for i in ids if folds[i] not in exclude]
            table = self.table(state)
            engine = RuleEngine(table.rows(ids), [state["task"]] * len(ids))
            self._parts[key] = Part(engine, ids, [str(gold_by_id[i]) for i in ids])
        return self._parts[key]

    def folds(self, state: SessionState) -> list[int]:
        return sorted(set(self.decider(state)["folds"].values()))

    def decider(self, state: SessionState) -> dict[str, Any]:
        """decider_predictions.json: the labels, each search sample's fold, and the decider's distributions
        (out-of-fold on search, from the final fit on test)."""
        key = ("decider", state["session_dir"])
        if key not in self._cache:
            self._cache[key] = read_json(Path(state["session_dir"]) / DECIDER_PREDICTIONS)
        return self._cache[key]

    def distributions(self, state: SessionState, part: str, ids: list[str]) -> list[LabelDistribution]:
        d = self.decider(state)
        labels = tuple(d["labels"])
        return [LabelDistribution(sample_id=i, task=state["task"], labels=labels, probs=tuple(d["probs"][part][i]))
                for i in ids]

    def fallback(self, state: SessionState, part: str, ids: list[str] | None = None) -> tuple[list[str], list[float]]:
        """What the rules decide together with on each sample of a part, and how sure it is: the decider's label
        and probability (out-of-fold on search: never from a model that saw the sample)."""
        ids = self.part(state, part).ids if ids is None else ids
        dists = self.distributions(state, part, ids)
        return [d.best for d in dists], [d.confidence for d in dists]

    def fields(self) -> tuple[str, ...]:
        # OCR text (and its title band) is most of what an image-scene sample has; the dialogue is most of a
        # dialogue sample.
        return ("user_text", "image_text", "image_title") if self.config.images else ("user_text",)

    def decider_name(self, state: SessionState) -> str:
        return "features decider" if self.decider(state)["decider"] == "features" else "label prior"
