"""The terms a model-free author may put into a rule: what a person would write, not fragments.

In scripts written with spaces (English, ...) a term is a whole word or a two-word phrase, never a stop-word, a
number or a piece of a word (the rule language matches such terms as whole words, see `kdsl.rules.normalize`).
In Chinese, where words are not separated, a term is a 2-4 character n-gram of a run of CJK characters.
"""

from __future__ import annotations

import re

from kdsl.rules.normalize import is_word_char

# English function words and chat filler: true of every intent, so never the reason for one.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves i'm im it's its i've ive i'd id don't dont can't cant
please hi hello hey thanks thank ok okay yes yeah get got want need know like would could also just still one
""".split())

_RUNS = re.compile(r"\S+")


def _words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of spaced-script letters and digits (apostrophes inside kept: it's)."""
    out, start = [], None
    for i, c in enumerate(text):
        inside = is_word_char(c) or (c == "'" and start is not None and i + 1 < len(text) and is_word_char(text[i + 1]))
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(text)))
    return out


def _useful_word(word: str) -> bool:
    return len(word) >= 2 and not word.isdigit() and word not in STOPWORDS


def candidate_terms(text: str, min_chars: int = 2, max_chars: int = 4) -> list[str]:
    """Distinct candidate terms of a normalised text, in order of first appearance."""
    seen: dict[str, None] = {}
    words = _words(text)
    for i, (s, e) in enumerate(words):
        word = text[s:e]
        if _useful_word(word):
            seen.setdefault(word, None)
        if i + 1 < len(words):
            s2, e2 = words[i + 1]
            nxt = text[s2:e2]
            # A phrase of two adjacent words (one space apart), at least one of them telling.
            if text[e:s2] == " " and (_useful_word(word) or _useful_word(nxt)) and not (word + nxt).isdigit():
                seen.setdefault(f"{word} {nxt}", None)
    run: list[str] = []
    for c in text + "\x00":
        if c.isalnum() and not is_word_char(c):  # a CJK (or other unspaced-script) character
            run.append(c)
            continue
        if run:
            chunk = "".join(run)
            for n in range(min_chars, max_chars + 1):
                for start in range(len(chunk) - n + 1):
                    seen.setdefault(chunk[start:start + n], None)
            run = []
    return list(seen)


def label_terms(texts: dict[str, list[str]], gold: list[str], task: str, *, per_label: int = 5,
                min_support: int = 3, min_lower: float = 0.4, min_chars: int = 2, max_chars: int = 4) -> list:
    """The terms that best single out each label on labeled samples, as one-term rules (`per_label` per label and
    field, ranked by the Wilson lower bound of the label's share among the samples holding the term). A person
    reading the samples by label would write these first; the search then adds what fixes the decider's errors.

    `texts` maps a field to the normalised text of each sample (in the order of `gold`)."""
    from collections import Counter

    from kdsl.rules.analysis import wilson_lower_bound
    from kdsl.rules.condition import AnyOf
    from kdsl.rules.rule import Provenance, Rule

    rules = []
    for field, column in texts.items():
        df: Counter[str] = Counter()
        by_label: dict[str, Counter[str]] = {}
        for text, label in zip(column, gold, strict=True):
            terms = set(candidate_terms(text, min_chars, max_chars))
            df.update(terms)
            by_label.setdefault(label, Counter()).update(terms)
        for label, counts in sorted(by_label.items()):
            ranked = sorted(((wilson_lower_bound(c, df[t]), len(t), t) for t, c in counts.items()
                             if df[t] >= min_support), key=lambda x: (-x[0], -x[1], x[2]))
            chosen: list[str] = []
            for lower, _, term in ranked:
                if lower < min_lower or len(chosen) >= per_label:
                    break
                if any(term in c or c in term for c in chosen):  # one of overlapping n-grams is enough
                    continue
                chosen.append(term)
                rules.append(Rule(label=label, task=task, when=AnyOf(field=field, any_of=(term,)),  # type: ignore[arg-type]
                                  statement=f"'{term}' in {field} means {label}",
                                  origin=Provenance(author="label-terms")))
    return rules


def name_terms(labels: list[str]) -> dict[str, list[str]]:
    """Label -> the terms of its name that no other label's name holds (`card_arrival` -> card, arrival,
    card arrival; 物流页面-物流异常页面 -> 异常, 物流异常, ...). A term two names share cannot tell them apart."""
    from kdsl.rules.normalize import normalize

    def terms(label: str) -> set[str]:
        return set(candidate_terms(normalize(re.sub(r"[\W_]+", " ", label))))

    of = {label: terms(label) for label in labels}
    out: dict[str, list[str]] = {}
    for label in labels:
        others = set().union(*(of[x] for x in labels if x != label))
        out[label] = sorted(t for t in of[label] if t not in others)
    return out


def label_name_rules(labels: list[str], task: str, fields: tuple[str, ...]) -> list:
    """One-term rules from the labels' own names: the user's words for each intent, knowledge that does not come
    from the few labeled samples (so choosing among them spends none of their evidence). The verifier keeps those
    the data bears out."""
    from kdsl.rules.condition import AnyOf
    from kdsl.rules.rule import Provenance, Rule

    return [Rule(label=label, task=task, when=AnyOf(field=field, any_of=(term,)),  # type: ignore[arg-type]
                 statement=f"'{term}' (from the label's name) in {field} means {label}",
                 origin=Provenance(author="label-names"))
            for label, terms in name_terms(labels).items() for term in terms for field in fields]
