"""A discovery session as a LangGraph StateGraph, checkpointed after every node (SQLite per session, or PostgreSQL).

prepare (split, features, the decider cross-fitted over k folds) -> discover (one search per fold) -> verify
(pooled over the folds) -> [review] -> commit -> arbiter (fitted on cross-fitted data) -> evaluate -> report.
Each session lives in `<KDSL_HOME>/sessions/<id>/`: config.json, split.json, features.jsonl, rules.json (the union
of the folds' rules.fold<k>.json), verdict.json, arbiter.json, evaluation.json, test_predictions.json, report.json,
events.jsonl, checkpoints.sqlite and decider/ (the deployable decider with its collaboration.json). A session
without a task is a group: one child session per task (`<id>.<task>`), joined into one decider folder.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from kdsl import __version__
from kdsl.agents.arbiter import ArbiterConfig
from kdsl.config import Settings
from kdsl.errors import ConfigError, DataError
from kdsl.graph.checkpointer import check_reachable, open_checkpointer, redact
from kdsl.graph.config import ReviewFn, SessionConfig
from kdsl.graph.context import ProgressHook, SessionContext
from kdsl.graph.layout import CHECKPOINTS, CONFIG, DECIDER_DIR, REPORT, read_json, write_json
from kdsl.graph.nodes import NODES, traced
from kdsl.graph.state import SessionState

logger = logging.getLogger(__name__)

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
    ctx = SessionContext(config, settings or Settings(), on_iteration=on_iteration)
    graph = StateGraph(SessionState)
    for name, node in NODES.items():
        graph.add_node(name, traced(name, functools.partial(node, ctx)))
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


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_session(
    config: SessionConfig,
    settings: Settings | None = None,
    *,
    session_id: str | None = None,
    on_iteration: ProgressHook | None = None,
    review_fn: ReviewFn | None = None,
    checkpointer_url: str | None = None,
) -> SessionOutcome:
    """Start a session and run it to the end (or to a review with no `review_fn`). Without a task, one child
    session per task of the data runs under this session's id (see `run_group`). `checkpointer_url`: the
    PostgreSQL URL with its password, when `config.checkpointer` (kept without it) is not enough to connect."""
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
    if config.checkpointer is not None:
        check_reachable(checkpointer_url or config.checkpointer)
    folder.mkdir(parents=True, exist_ok=True)
    head: dict[str, Any] = {"session_id": session_id, "kdsl_version": __version__, "created": time.time(),
                            "config": config.model_dump(mode="json")}
    if config.task is None:
        head["children"] = {t: child_id(session_id, t) for t in tasks}
        write_json(folder / CONFIG, head)
        return run_group(config, settings, session_id, on_iteration=on_iteration, review_fn=review_fn,
                         checkpointer_url=checkpointer_url)
    write_json(folder / CONFIG, head)
    return _drive(config, settings, session_id, on_iteration, review_fn, checkpointer_url)


def child_id(session_id: str, task: str) -> str:
    """The id of a group session's child for one task (a task name made safe for a folder name)."""
    return f"{session_id}.{re.sub(r'[^A-Za-z0-9_-]', '_', task)}"


def run_group(config: SessionConfig, settings: Settings, session_id: str, *,
              on_iteration: ProgressHook | None = None, review_fn: ReviewFn | None = None,
              checkpointer_url: str | None = None) -> SessionOutcome:
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
        outcomes[task] = _drive(child_config, settings, child, on_iteration, review_fn, checkpointer_url)
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
    checkpointer_url: str | None = None,
) -> SessionOutcome:
    """Continue a session (or every child of a group) from its last checkpoint (after a crash, a kill, or a review
    pause). `checkpointer_url`: as for `run_session`."""
    settings = settings or Settings()
    config = load_session_config(session_id, settings)
    if config.task is None:
        return run_group(config, settings, session_id, on_iteration=on_iteration, review_fn=review_fn,
                         checkpointer_url=checkpointer_url)
    return _drive(config, settings, session_id, on_iteration, review_fn, checkpointer_url)


def _checkpointer_url(config: SessionConfig, settings: Settings, session_id: str, given: str | None) -> str | None:
    """The URL to connect with: the one given (it has the password config.json lacks), else KDSL_CHECKPOINTER
    when it names the session's database, else the one in config.json; None for a SQLite session."""
    if config.checkpointer is None:
        if given is not None:
            raise ConfigError(f"session {session_id} keeps its checkpoints in its folder's {CHECKPOINTS}, not in "
                              "a database: resume it without --checkpointer")
        return None
    if given is not None:
        return given
    if settings.checkpointer is not None and redact(settings.checkpointer) == config.checkpointer:
        return settings.checkpointer
    return config.checkpointer


def check_session_files(folder: Path, session_id: str) -> None:
    """Refuse to resume a session whose JSON files do not parse, naming the file, before the graph runs (a node
    failing on it would add an error write to the checkpoints: the files would no longer be as they were)."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot be read ({type(e).__name__}: {e}), so session {session_id} cannot resume; its "
                            "files are left as they are (start a new session with `kdsl discover --data ...`)",
                            path=str(path)) from e


def _drive(config: SessionConfig, settings: Settings, session_id: str, on_iteration: ProgressHook | None,
           review_fn: ReviewFn | None, checkpointer_url: str | None = None) -> SessionOutcome:
    folder = settings.sessions_dir / session_id
    thread = {"configurable": {"thread_id": session_id}}
    with open_checkpointer(_checkpointer_url(config, settings, session_id, checkpointer_url),
                           folder / CHECKPOINTS) as saver:
        graph = build_session_graph(config, settings, saver, on_iteration=on_iteration)
        snapshot = graph.get_state(thread)
        if not snapshot.values:
            first: Any = {"session_id": session_id, "session_dir": str(folder), "task": config.task}
        elif not snapshot.next:
            return SessionOutcome(session_id=session_id, session_dir=folder, paused=False,
                                  state=dict(snapshot.values))
        else:
            logger.info("session %s: resuming at %s", session_id, ", ".join(snapshot.next))
            check_session_files(folder, session_id)
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
