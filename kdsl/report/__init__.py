"""One self-contained HTML page per discovery session: `render_report(session_dir)` and `write_report(...)`.

The page carries its CSS inline, draws with HTML tables, `<details>` and inline SVG, and loads nothing: a
Content-Security-Policy forbids scripts and every fetch. Every string from data or a model (labels, terms, rule
statements, the author's output) is escaped: model output is untrusted. A session that crashed or still runs renders
what its folder holds, with a note for each missing or damaged file; no section can stop the page.

Modules: `session` reads the session folder (and recomputes the test predictions), `markup` holds the escaping and
HTML building blocks, `scores`, `rule_table`, `search_tree` and `activity` render the sections, `style` is the CSS
and `page` puts the page together.
"""

from kdsl.report.activity import MAX_TIMELINE_ROWS, SHORT_OUTPUT_CHARS
from kdsl.report.markup import Html, esc
from kdsl.report.page import REPORT_HTML, render_report, write_report
from kdsl.report.scores import TOLERANCE

__all__ = [
    "MAX_TIMELINE_ROWS", "REPORT_HTML", "SHORT_OUTPUT_CHARS", "TOLERANCE", "Html", "esc", "render_report",
    "write_report",
]
