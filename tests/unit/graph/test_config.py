"""The session config's checks of where candidates come from."""

from __future__ import annotations

import pytest

from kdsl.agents.authors import AuthorConfig, AuthorContext, make_author
from kdsl.errors import ConfigError
from kdsl.graph import SessionConfig


def test_a_session_with_no_candidate_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no candidates"):
        SessionConfig(data=tmp_path, author="none", mined=False)
    # Any one source is enough: mined terms, a search author or a term author.
    assert SessionConfig(data=tmp_path, author="none").mined
    assert not SessionConfig(data=tmp_path, mined=False).mined
    assert SessionConfig(data=tmp_path, author="none", mined=False, term_author="llama_cpp:m").author == "none"


def test_author_none_is_accepted_by_the_config_but_builds_no_proposer(tmp_path):
    with pytest.raises(ValueError, match="author must be"):
        SessionConfig(data=tmp_path, author="nobody")
    with pytest.raises(ConfigError, match="runs no search"):
        make_author("none", AuthorContext(engine=None, gold=[], fields=(), settings=None, config=AuthorConfig()))
