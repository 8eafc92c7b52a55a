"""The report's HTML building blocks: escaping, number formats, tables and notes.

Every string from data or a model (labels, terms, rule statements, the author's output) goes through `esc`: model
output is untrusted. A string is HTML only when it is an `Html`, built from escaped parts.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class Html(str):
    """A string that is already HTML (built from escaped parts); everything else is text and gets escaped."""


def esc(value: Any) -> str:
    """Text -> HTML text (quotes too, so it is safe inside attributes); `Html` passes through."""
    if isinstance(value, Html):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any, spec: str = ".4f") -> str:
    """A number in `spec`; a dash for anything else (missing, a bool, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float)
                                                                          and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def signed(value: Any) -> str:
    return num(value, "+.4f")


def percent(share: Any) -> str:
    return "–" if num(share) == "–" else f"{share * 100:.0f}%"


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], *, table_id: str | None = None,
          numeric: Iterable[int] = (), row_class: Callable[[int], str] | None = None, extra: str = "") -> Html:
    """A table; cells are text (escaped) unless they are `Html`. Columns in `numeric` align right."""
    right = set(numeric)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f'<th{" class=num" if i in right else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = row_class(r) if row_class else ""
        cells = "".join(f'<td{" class=num" if i in right else ""}>{esc(c)}</td>' for i, c in enumerate(row))
        body.append(f'<tr class="{esc(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return Html(f"<table{ident}{extra}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def note(text: Any, kind: str = "note") -> Html:
    return Html(f'<p class="{kind}">{esc(text)}</p>')

