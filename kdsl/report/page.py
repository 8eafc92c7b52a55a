"""The report page: the session header, each section guarded so that none can stop the page, and the page around
them (inline CSS, a Content-Security-Policy that forbids scripts and every fetch)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

from kdsl._internal._atomic import write_text_atomic
from kdsl.report.activity import costs_section, files_section, timeline_section
from kdsl.report.markup import Html, esc, note
from kdsl.report.rule_table import rules_section
from kdsl.report.scores import class_scores_section, summary_section, test_scores_section
from kdsl.report.search_tree import search_section
from kdsl.report.session import SessionFiles, load_session
from kdsl.report.style import CSS

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"


def _render_section(anchor: str, title: str, body: Callable[[], str], s: SessionFiles) -> Html:
    """One section; a section that fails says so in the page and the log instead of stopping the report."""
    try:
        inner = body()
    except Exception as e:  # noqa: BLE001 - the page must render whatever one section meets
        logger.warning("report of %s: the %s section failed: %s", s.folder, anchor, e)
        logger.debug("the %s section's error", anchor, exc_info=True)
        inner = note(f"This section could not be rendered from the session's files ({type(e).__name__}: {e}).",
                     "warn")
    return Html(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{inner}</section>')


def _created(s: SessionFiles) -> str:
    created = (s.head or {}).get("created")
    if not isinstance(created, int | float):
        return "–"
    return dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(s: SessionFiles) -> str:
    c = s.config
    budgets = [f"{c.get('iterations', '?')} iterations"]
    if c.get("budget_seconds") is not None:
        budgets.append(f"{c['budget_seconds']} s")
    if c.get("budget_tokens") is not None:
        budgets.append(f"{c['budget_tokens']} tokens")
    verify = (f"support ≥ {c.get('min_support', '?')}, precision ≥ {c.get('min_precision', '?')}, "
              f"Wilson lower bound ≥ {c.get('min_precision_lower', '?')}")
    data = (s.report or {}).get("data") or {}
    sizes = "–" if not data else f"search {data.get('search')} · verify {data.get('verify')} · test {data.get('test')}"
    rows = [
        ("session", s.session_id), ("status", s.status), ("created", _created(s)),
        ("kdsl", (s.head or {}).get("kdsl_version", "–")), ("task", s.task or "–"), ("data", c.get("data", "–")),
        ("features", "dialogue text and images (OCR, visual labels)" if c.get("images", True) else "dialogue text"),
        ("split sizes", sizes), ("author model", c.get("author", "–")), ("strategy", c.get("strategy", "–")),
        ("budgets", ", ".join(budgets)), ("edits per call (k) · seed", f"{c.get('k', '?')} · {c.get('seed', '?')}"),
        ("verify thresholds", verify), ("review by hand", "yes" if c.get("review") else "no"),
        ("stop reason", s.stop_reason),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    notes = "".join(note(n, "warn") for n in s.notes)
    return f'<dl class="meta">{dl}</dl>{notes}'


# No script runs and nothing is fetched, whatever a rule or a model wrote: the page only needs its own inline CSS.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_SECTIONS: tuple[tuple[str, str, Callable[[SessionFiles], str]], ...] = (
    ("summary", "Summary", summary_section),
    ("test", "Test scores", test_scores_section),
    ("classes", "Per-class scores", class_scores_section),
    ("rules", "Rules", rules_section),
    ("search", "Search", search_section),
    ("costs", "Costs", costs_section),
    ("timeline", "Timeline", timeline_section),
    ("files", "Files", files_section),
)


def render_report(session_dir: str | Path) -> str:
    """The session's report as one self-contained HTML page (inline CSS and SVG, no script, no fetch).

    Args:
        session_dir: the session folder (`KDSL_HOME/sessions/<id>`). Missing or damaged files leave a note.

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    s = load_session(session_dir)
    header = _render_section("session", "Session", lambda: _header(s), s)
    body = "".join(_render_section(anchor, title, (lambda fn=fn: fn(s)), s) for anchor, title, fn in _SECTIONS)
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in (("session", "Session", None), *_SECTIONS))
    from kdsl import __version__

    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>kdsl session {esc(s.session_id)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>kdsl session <code>{esc(s.session_id)}</code></h1>"
        f'<div class="sub">{esc(s.task or "?")} · {esc(s.config.get("author", "?"))} author · '
        f'{esc(s.config.get("strategy", "?"))} · {esc(s.status)}</div><nav>{nav}</nav></header>'
        f"<main>{header}{body}</main>"
        f"<footer>written by kdsl {esc(__version__)} from the files in {esc(s.folder)}</footer>"
        "</body></html>\n"
    )


def write_report(session_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report and write it (atomically) to `out`, by default `<session_dir>/report.html`."""
    html_text = render_report(session_dir)
    path = Path(out) if out is not None else Path(session_dir) / REPORT_HTML
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, html_text)
