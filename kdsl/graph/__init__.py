"""The discovery session: a LangGraph StateGraph over prepare, discover, verify, review, commit, evaluate, report."""

from kdsl.graph.session import (
    SessionConfig,
    SessionOutcome,
    build_session_graph,
    load_session_config,
    new_session_id,
    resume_session,
    route_review,
    run_session,
)
from kdsl.graph.state import SessionState

__all__ = [
    "SessionConfig", "SessionOutcome", "SessionState", "build_session_graph", "load_session_config",
    "new_session_id", "resume_session", "route_review", "run_session",
]
