"""The term author in a session: a real small model (SmolLM2 through llama.cpp) asked once per label name, its
terms checked, kept, verified like the mined ones, and not asked again on resume."""

from __future__ import annotations

import json

import pytest

from kdsl.agents.authors.knowledge import KnowledgeTerms, ask_terms, knowledge_rules
from kdsl.graph import SessionConfig, run_session
from kdsl.models import load_backend

pytestmark = pytest.mark.slow
SMOLLM2 = "llama_cpp:smollm2-135m-instruct"


def test_the_model_is_asked_once_per_label_and_every_term_is_checked(home_with_packs):
    settings = home_with_packs()
    backend = load_backend(SMOLLM2, settings, n_ctx=2048)
    try:
        found = ask_terms(backend, ["card_arrival", "lost_or_stolen_card"], language="en", model=SMOLLM2)
    finally:
        backend.close()
    assert found.calls == 2 and found.prompt_tokens > 50 and found.completion_tokens > 0
    kept = [t for terms in found.terms.values() for t in terms]
    # Whatever the small model wrote: kept terms are normalised, 2-24 characters, with a letter; the rest counted.
    assert all(t == t.strip().casefold() and 2 <= len(t) <= 24 and any(c.isalpha() for c in t) for t in kept)
    assert len(kept) + sum(found.dropped.values()) >= 1
    rules = knowledge_rules(found, "intent", ("user_text",))
    assert len(rules) == len(kept) and all(r.origin.author == f"knowledge:{SMOLLM2}" for r in rules)


def test_a_session_asks_the_term_author_once_and_verifies_its_terms(banking77_slice, home_with_packs):
    settings = home_with_packs()
    data = banking77_slice(4, 12)
    config = SessionConfig(data=data, task="intent", term_author=SMOLLM2, iterations=20, folds=3, seed=0,
                           images=False)
    outcome = run_session(config, settings)
    folder = outcome.session_dir
    found = KnowledgeTerms.model_validate_json((folder / "knowledge_terms.json").read_text(encoding="utf-8"))
    labels = json.loads((folder / "gold.json").read_text(encoding="utf-8"))["labels"]
    assert found.calls == len(labels) == 4 and set(found.terms) <= set(labels)
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    asked = [e for e in events if e["agent"] == "term-author"]
    assert len(asked) == 1 and asked[0]["model"] == SMOLLM2 and asked[0]["prompt_tokens"] > 0
    # Its terms are candidates of every fold, beside the mined ones; any the verifier accepted passed the same bars.
    kept = {(label, t) for label, terms in found.terms.items() for t in terms}
    for k in range(3):
        fold = json.loads((folder / f"terms.fold{k}.json").read_text(encoding="utf-8"))["rules"]
        terms = {(r["label"], r["when"]["any_of"][0]) for r in fold if "any_of" in r["when"]}
        from_model = {(r["label"], r["when"]["any_of"][0]) for r in fold
                      if r["origin"]["author"] == f"knowledge:{SMOLLM2}"}
        assert kept <= terms and from_model <= kept  # a term mined too is kept once, as the miner's
    verdict = json.loads((folder / "verdict.json").read_text(encoding="utf-8"))
    from_model = [v for v in verdict["rules"] if "the model's knowledge" in v.get("statement", "")]
    bars = verdict["config"]
    for v in from_model:
        if v["accepted"]:
            assert v["stats"]["support"] >= bars["min_support"] and v["stats"]["precision"] >= bars["min_precision"]
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["test"]["n"] > 0


def test_model_terms_alone_come_from_the_cache_and_their_asking_is_charged_to_the_budget(banking77_slice,
                                                                                          home_with_packs):
    settings = home_with_packs()
    data = banking77_slice(4, 12)
    first = run_session(SessionConfig(data=data, task="intent", term_author=SMOLLM2, iterations=20, folds=3,
                                      seed=0, images=False), settings).session_dir
    asked = KnowledgeTerms.model_validate_json((first / "knowledge_terms.json").read_text(encoding="utf-8"))
    assert len(asked.call_seconds) == asked.calls == 4

    # The model alone: no search, no mined terms; its terms are read from the cache, not asked again.
    alone = run_session(SessionConfig(data=data, task="intent", author="none", mined=False, term_author=SMOLLM2,
                                      folds=3, seed=1, images=False), settings).session_dir
    again = KnowledgeTerms.model_validate_json((alone / "knowledge_terms.json").read_text(encoding="utf-8"))
    assert again == asked
    events = [json.loads(line) for line in (alone / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [json.loads(e["output"])["cached"] for e in events if e["agent"] == "term-author"] == [True]
    assert not [e for e in events if e["agent"] == "author"]  # no search author was called
    progress = json.loads((alone / "progress.json").read_text(encoding="utf-8"))
    assert progress["iterations"] == 0 and progress["stop_reason"] == "no search author"
    candidates = [r for k in range(3)
                  for r in json.loads((alone / f"terms.fold{k}.json").read_text(encoding="utf-8"))["rules"]]
    assert all(r["origin"]["author"] == f"knowledge:{SMOLLM2}" for r in candidates)

    # A budget smaller than the asking's recorded seconds leaves the search nothing, even with cached terms.
    poor = run_session(SessionConfig(data=data, task="intent", term_author=SMOLLM2, iterations=20, folds=3, seed=0,
                                     images=False, budget_seconds=asked.seconds / 2), settings).session_dir
    progress = json.loads((poor / "progress.json").read_text(encoding="utf-8"))
    assert progress["iterations"] == 0 and progress["stop_reason"] == "budget"

