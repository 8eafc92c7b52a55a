"""The discovery session: a LangGraph StateGraph over prepare, discover, verify, review, commit, evaluate, report."""

from kdsl.graph.catalog import SessionListing, SessionTrace, list_sessions, session_trace
from kdsl.graph.config import SessionConfig
from kdsl.graph.session import (
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
    "SessionConfig", "SessionListing", "SessionOutcome", "SessionState", "SessionTrace", "build_session_graph",
    "list_sessions", "load_session_config", "session_trace",
    "new_session_id", "resume_session", "route_review", "run_session",
]
