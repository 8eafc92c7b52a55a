"""A discovery session as a LangGraph StateGraph with a SQLite checkpointer per session.

prepare (split, features, the decider cross-fitted over k folds) -> discover (one search per fold) -> verify
(pooled over the folds) -> [review] -> commit -> arbiter (fitted on cross-fitted data) -> evaluate -> report.
Each session lives in `<KDSL_HOME>/sessions/<id>/`: config.json, split.json, features.jsonl, rules.json (the union
of the folds' rules.fold<k>.json), verdict.json, arbiter.json, evaluation.json, test_predictions.json, report.json,
events.jsonl, checkpoints.sqlite and decider/ (the deployable decider with its collaboration.json). A session
without a task is a group: one child session per task (`<id>.<task>`), joined into one decider folder.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdsl import __version__
from kdsl.agents.arbiter import ArbiterConfig
from kdsl.config import Settings
from kdsl.errors import ConfigError
from kdsl.graph.layout import CHECKPOINTS, CONFIG, DECIDER_DIR, REPORT, read_json, write_json
from kdsl.graph.nodes import ProgressHook, SessionNodes
from kdsl.graph.state import SessionState

MODEL_FREE_AUTHORS = ("contrast", "ngram")

logger = logging.getLogger(__name__)

ReviewFn = Callable[[dict[str, Any]], list[str]]  # the interrupt's payload -> the rule ids kept


class SessionConfig(BaseModel):
    """What a discovery session does. Saved in the session folder's config.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Path = Field(description="Dataset path (any format `kdsl data` reads).")
    task: str | None = Field(None, min_length=1, description="Task whose rules are discovered, e.g. "
                             "dialogue_intent; None: every task of the data, one child session per task.")
    author: str = Field("contrast", description="'backend:model' (e.g. llama_cpp:qwen2.5-coder-1.5b-instruct), "
                        "'contrast' (model-free: label-specific substrings of the search split) or 'ngram' "
                        "(model-free: random substrings, a floor).")
    strategy: Literal["mcts", "greedy", "random"] = Field("mcts", description="Search strategy.")
    iterations: int = Field(1000, ge=1, description="Search iterations, shared out over the folds (the model-free "
                            "authors run about 200 a second).")
    budget_seconds: float | None = Field(None, gt=0, description="Wall-clock budget of the search.")
    budget_tokens: int | None = Field(None, ge=1, description="Author token budget of the search.")
    k: int = Field(4, ge=1, le=32, description="Edits asked of the author per call.")
    seed: int = Field(0, ge=0, description="Seeds the split and the search.")
    review: bool = Field(False, description="Pause after verification for a person to keep or drop each rule.")
    images: bool = Field(True, description="OCR and visual labels as features (False: dialogue text only).")
    language: str = Field("zh", description="Language of the author's instructions ('zh' for MDSIRC).")
    author_max_tokens: int = Field(512, ge=16, description="Reply budget of one author call.")
    folds: int = Field(5, ge=2, le=20, description="Cross-fitting folds of the search split: the decider's "
                       "out-of-fold predictions, one rule search per fold, verification pooled over the folds.")
    test: float = Field(0.2, gt=0, lt=1, description="Share of the data sealed for the final evaluation.")
    k_shot: int | None = Field(None, ge=1, description="Few-shot: keep at most k search samples per label (the "
                               "rest of the search share is left out; the test share stays whole).")
    split: Path | None = Field(None, description="A split file (`kdsl data split`, or your own train / test ids) "
                               "instead of drawing one: its search and verify parts are searched, its test is sealed.")
    test_data: Path | None = Field(None, description="A separate labeled test file (same format and tasks as "
                                   "`data`): sealed, read once at the end; all of `data` is searched (with "
                                   "`k_shot`: up to k per label).")
    oos_label: str | None = Field(None, min_length=1, description="The out-of-scope label, scored apart (in-scope "
                                  "accuracy, out-of-scope recall); default: a label named oos or out_of_scope.")
    min_support: int = Field(3, ge=1, description="Verify: a rule must fire on at least this many samples.")
    min_precision_lower: float = Field(0.4, ge=0, le=1, description="Verify: least Wilson lower bound of precision "
                                       "(0.4: a rule right on 3 of 3 held-out samples counts).")
    min_precision: float = Field(0.9, ge=0, le=1, description="Verify: least precision of a rule (pooled counts).")
    target_precision: float | None = Field(
        0.85, ge=0, le=1, description="Verify: tighten the bars above step by step (support 4, 5, 6; lower bound "
        "0.5, 0.6; precision 0.95) until the accepted set's nested cross-fitted precision reaches this; None: the "
        "bars as given.")
    memory: Path | None = Field(None, description="Rule memory folder (default: KDSL_HOME/memory).")
    decider: Literal["features", "majority"] = Field(
        "features", description="What the rules decide together with: 'features' (the CPU decider, fitted on the "
        "search split; the search rewards rules by how they fix its out-of-fold predictions there, the sealed test "
        "compares rules + decider with the decider alone) or 'majority' (the search split's majority label).")

    text_column: str | None = Field(None, description="A CSV's text column (default: recognised by name).")
    label_column: str | None = Field(None, description="A CSV's label column (default: recognised by name).")

    @property
    def columns(self) -> dict[str, str | None]:
        """The column names to pass to `load_dataset`."""
        return {"text_column": self.text_column, "label_column": self.label_column}

    @model_validator(mode="after")
    def _one_test(self) -> SessionConfig:
        if self.split is not None and self.test_data is not None:
            raise ValueError("give a split file or a test file, not both (a split file names its own test ids)")
        return self

    @field_validator("data", "split", "test_data")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # config.json must name the same files when the session is resumed or evaluated from another folder.
        return None if v is None else v.expanduser().resolve()

    @field_validator("author")
    @classmethod
    def _author(cls, v: str) -> str:
        if v not in MODEL_FREE_AUTHORS and ":" not in v:
            raise ValueError(f"author must be {' or '.join(map(repr, MODEL_FREE_AUTHORS))} or 'backend:model', "
                             f"got {v!r}")
        return v


class SessionOutcome(BaseModel):
    """Where a run or a resume left the session: finished, or paused for review."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    session_dir: Path
    paused: bool = Field(description="Waiting for a review (resume it with a review function).")
    state: dict[str, Any]

    @property
    def report(self) -> dict[str, Any]:
        return read_json(self.session_dir / REPORT)


def route_review(config: SessionConfig) -> Callable[[SessionState], str]:
    """After verify: to review when the session asks for one and has rules to show, else straight to commit."""

    def route_after_verify(state: SessionState) -> str:
        return "review" if config.review and state.get("accepted") else "commit"

    return route_after_verify


def build_session_graph(
    config: SessionConfig,
    settings: Settings | None = None,
    checkpointer: Any = None,
    *,
    on_iteration: ProgressHook | None = None,
) -> Any:
    """The compiled session graph. `on_iteration` sees the search's progress (for a display)."""
    nodes = SessionNodes(config, settings or Settings(), on_iteration=on_iteration)
    graph = StateGraph(SessionState)
    for name in ("prepare", "discover", "verify", "review", "commit", "arbiter", "evaluate", "report"):
        graph.add_node(name, nodes.traced(name, getattr(nodes, name)))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "discover")
    graph.add_edge("discover", "verify")
    graph.add_conditional_edges("verify", route_review(config), {"review": "review", "commit": "commit"})
    graph.add_edge("review", "commit")
    graph.add_edge("commit", "arbiter")
    graph.add_edge("arbiter", "evaluate")
    graph.add_edge("evaluate", "report")
    graph.add_edge("report", END)
    return graph.compile(checkpointer=checkpointer)


@contextmanager
def sqlite_checkpointer(path: str | Path) -> Iterator[SqliteSaver]:
    """A SQLite checkpointer on one file, closed on exit."""
    conn = sqlite3.connect(str(path), check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_session(
    config: SessionConfig,
    settings: Settings | None = None,
    *,
    session_id: str | None = None,
    on_iteration: ProgressHook | None = None,
    review_fn: ReviewFn | None = None,
) -> SessionOutcome:
    """Start a session and run it to the end (or to a review with no `review_fn`). Without a task, one child
    session per task of the data runs under this session's id (see `run_group`)."""
    from kdsl.data import load_dataset

    settings = settings or Settings()
    session_id = session_id or new_session_id()
    folder = settings.sessions_dir / session_id
    if (folder / CONFIG).exists():
        raise ConfigError(f"session {session_id} exists already; continue it with `kdsl discover --resume "
                          f"{session_id}`")
    # The data is read before the session folder exists: a bad path or task leaves no ghost session behind.
    train = load_dataset(config.data, **config.columns)
    tasks = list(train.tasks)
    if config.task is not None and config.task not in tasks:
        raise ConfigError(f"{config.data}: no task {config.task!r}; its tasks: {', '.join(tasks)} (or leave out "
                          "--task to cover them all)")
    scope = [config.task] if config.task is not None else tasks
    if config.oos_label is not None and not any(config.oos_label in train.label_spaces[t] for t in scope):
        labels = train.label_spaces[scope[0]]
        raise ConfigError(f"{config.data}: --oos-label {config.oos_label!r} is not a label of task {scope[0]!r} "
                          f"({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})")
    if config.test_data is not None:  # a test file that cannot be read or does not fit is refused up front too
        from kdsl.data import with_test_file

        with_test_file(train, load_dataset(config.test_data, **config.columns))
    folder.mkdir(parents=True, exist_ok=True)
    head: dict[str, Any] = {"session_id": session_id, "kdsl_version": __version__, "created": time.time(),
                            "config": config.model_dump(mode="json")}
    if config.task is None:
        head["children"] = {t: child_id(session_id, t) for t in tasks}
        write_json(folder / CONFIG, head)
        return run_group(config, settings, session_id, on_iteration=on_iteration, review_fn=review_fn)
    write_json(folder / CONFIG, head)
    return _drive(config, settings, session_id, on_iteration, review_fn)


def child_id(session_id: str, task: str) -> str:
    """The id of a group session's child for one task (a task name made safe for a folder name)."""
    return f"{session_id}.{re.sub(r'[^A-Za-z0-9_-]', '_', task)}"


def run_group(config: SessionConfig, settings: Settings, session_id: str, *,
              on_iteration: ProgressHook | None = None, review_fn: ReviewFn | None = None) -> SessionOutcome:
    """Run (or resume) every child session of a group, then join them into one deployable model: the children's
    deciders merged into one folder (one head per task, as each was fitted) with all accepted rules and each
    task's arbiter weight, and one report.json."""
    folder = settings.sessions_dir / session_id
    children: dict[str, str] = read_json(folder / CONFIG)["children"]
    outcomes = {}
    for task, child in children.items():
        child_folder = settings.sessions_dir / child
        child_config = config.model_copy(update={"task": task})
        if not (child_folder / CONFIG).exists():
            child_folder.mkdir(parents=True, exist_ok=True)
            write_json(child_folder / CONFIG, {"session_id": child, "kdsl_version": __version__,
                                               "created": time.time(), "parent": session_id,
                                               "config": child_config.model_dump(mode="json")})
        logger.info("session %s: task %s (child session %s)", session_id, task, child)
        outcomes[task] = _drive(child_config, settings, child, on_iteration, review_fn)
        if outcomes[task].paused:
            return SessionOutcome(session_id=session_id, session_dir=folder, paused=True,
                                  state={"paused_child": child})
    _join_group(session_id, children, settings)
    return SessionOutcome(session_id=session_id, session_dir=folder, paused=False,
                          state={"children": children})


def _join_group(session_id: str, children: dict[str, str], settings: Settings) -> None:
    from kdsl.agents.collaboration import ArbiterState, Collaboration
    from kdsl.agents.decider_kinds import default_encoders
    from kdsl.agents.feature_decider import FeatureDecider, merge_deciders
    from kdsl.rules import RuleSet

    folder = settings.sessions_dir / session_id
    reports = {t: read_json(settings.sessions_dir / c / REPORT) for t, c in children.items()}
    parts = [settings.sessions_dir / c / DECIDER_DIR for c in children.values()]
    if all(p.is_dir() for p in parts):
        images = bool(read_json(folder / CONFIG)["config"].get("images", True))
        encoders = default_encoders(settings, images=images)
        merged = merge_deciders([FeatureDecider.load(p, encoders) for p in parts], name=f"session-{session_id}")
        target = merged.save(folder / DECIDER_DIR)
        from kdsl.data import Split

        splits = [Split.load(p / "split.json") for p in parts]
        Split(dataset=splits[0].dataset.split(":")[0], fingerprint=splits[0].fingerprint, config=splits[0].config,
              search=tuple(i for sp in splits for i in sp.search), verify=(),
              test=tuple(i for sp in splits for i in sp.test)).save(target / "split.json")
        collaborations = [Collaboration.load(p) for p in parts]
        rules = tuple(r for c in collaborations if c is not None for r in c.rules.rules)
        weights = {t: w for c in collaborations if c is not None
                   for t, w in c.arbiters["together:stacked"].weights.items()}
        Collaboration(rules=RuleSet(rules=rules), arbiters={
            "together:stacked": ArbiterState(config=ArbiterConfig(policy="stacked"), weights=weights),
            "together:rules_first": ArbiterState(config=ArbiterConfig(policy="rules_first")),
            "together:decider_first": ArbiterState(config=ArbiterConfig(policy="decider_first")),
        }).save(target)
    write_json(folder / REPORT, {"session_id": session_id, "kdsl_version": __version__,
                                 "config": read_json(folder / CONFIG)["config"], "children": children,
                                 "tasks": reports})


def load_session_config(session_id: str, settings: Settings | None = None) -> SessionConfig:
    settings = settings or Settings()
    path = settings.sessions_dir / session_id / CONFIG
    if not path.exists():
        raise ConfigError(f"no session {session_id!r} under {settings.sessions_dir}")
    return SessionConfig.model_validate(read_json(path)["config"])


def resume_session(
    session_id: str,
    settings: Settings | None = None,
    *,
    on_iteration: ProgressHook | None = None,
    review_fn: ReviewFn | None = None,
) -> SessionOutcome:
    """Continue a session (or every child of a group) from its last checkpoint (after a crash, a kill, or a review
    pause)."""
    settings = settings or Settings()
    config = load_session_config(session_id, settings)
    if config.task is None:
        return run_group(config, settings, session_id, on_iteration=on_iteration, review_fn=review_fn)
    return _drive(config, settings, session_id, on_iteration, review_fn)


def _drive(config: SessionConfig, settings: Settings, session_id: str, on_iteration: ProgressHook | None,
           review_fn: ReviewFn | None) -> SessionOutcome:
    folder = settings.sessions_dir / session_id
    thread = {"configurable": {"thread_id": session_id}}
    with sqlite_checkpointer(folder / CHECKPOINTS) as saver:
        graph = build_session_graph(config, settings, saver, on_iteration=on_iteration)
        snapshot = graph.get_state(thread)
        if not snapshot.values:
            first: Any = {"session_id": session_id, "session_dir": str(folder), "task": config.task}
        elif not snapshot.next:
            return SessionOutcome(session_id=session_id, session_dir=folder, paused=False,
                                  state=dict(snapshot.values))
        else:
            logger.info("session %s: resuming at %s", session_id, ", ".join(snapshot.next))
            first = None
        result = graph.invoke(first, thread)
        while "__interrupt__" in result:
            if review_fn is None:
                return SessionOutcome(session_id=session_id, session_dir=folder, paused=True,
                                      state={k: v for k, v in result.items() if k != "__interrupt__"})
            payload = result["__interrupt__"][0].value
            result = graph.invoke(Command(resume=review_fn(payload)), thread)
        return SessionOutcome(session_id=session_id, session_dir=folder, paused=False, state=dict(result))


def session_summary(session_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """The session's report.json, or its config while it has none."""
    folder = (settings or Settings()).sessions_dir / session_id
    path = folder / REPORT
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else read_json(folder / CONFIG)
