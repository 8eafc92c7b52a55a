"""One text normalisation for rule terms and sample fields, so a rule matches however the text was typed."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace other than newlines (newlines separate turns and OCR lines)


def normalize(text: str) -> str:
    """NFKC (full-width -> half-width, compatibility forms), case-folded, inner spaces collapsed, trimmed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", text).strip()


# Scripts written with spaces between words (Latin, Greek, Cyrillic, ...) and digits sit below the CJK blocks.
_CJK_START = 0x2E80


def is_word_char(c: str) -> bool:
    """A letter or digit of a script that separates words with spaces: a term ending in one is a word there."""
    return c.isalnum() and ord(c) < _CJK_START


def term_at(text: str, term: str, pos: int) -> bool:
    """Whether the occurrence of `term` at `pos` of `text` stands on its own: where the term begins (ends) with a
    letter or digit of a spaced script, the text must not go on with another one there. So `cancel` does not
    match inside `cancellation`, while Chinese terms (no spaces between words) match as substrings, and `app`
    matches in `淘宝app`."""
    if is_word_char(term[0]) and pos > 0 and is_word_char(text[pos - 1]):
        return False
    end = pos + len(term)
    return not (is_word_char(term[-1]) and end < len(text) and is_word_char(text[end]))


def contains_term(text: str, term: str) -> bool:
    """`term` (normalised) occurs in `text` (normalised) as a word where it is one, as a substring otherwise."""
    pos = text.find(term)
    while pos >= 0:
        if term_at(text, term, pos):
            return True
        pos = text.find(term, pos + 1)
    return False
