"""``\\boxed{}`` / ``\\fbox{}`` answers: brace matching, the last box, and boxes joined by separators.

Pure ``re`` code with bounded work per call; :mod:`thr.verifier.extract` builds the full answer
extraction on it.
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")


def _match_braces(text: str, start: int, end: int | None = None) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``text[start]`` (searching before ``end``);
    None when unbalanced."""
    depth = 0
    i = start
    n = len(text) if end is None else end
    while i < n:
        c = text[i]
        if c == "\\":  # skip escaped char, e.g. \{ or \}
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


_BOX_TOKEN_RE = re.compile(r"[^\s$\\]+|\\[a-zA-Z]+(?:\{[^{}]*\})*")


def _parse_box(text: str, m: re.Match[str], limit: int) -> tuple[int, str | None]:
    """``(end, content)`` of the box command matched by ``m``, looking no further than
    ``limit``; ``content`` is None for a truncated (unbalanced) or empty box."""
    i = m.end()
    while i < limit and text[i] in " \t":
        i += 1
    if i < limit and text[i] == "{":
        close = _match_braces(text, i, limit)
        if close is None:
            return limit, None
        return close, (text[i + 1 : close - 1].strip() or None)
    tok = _BOX_TOKEN_RE.match(text, i, limit)
    if not tok or m.end() == i and not text[m.end() : m.end() + 1].isspace():
        return m.end(), None
    return tok.end(), (tok.group(0).rstrip(".,;") or None)


def last_boxed(text: str) -> tuple[bool, str | None]:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Returns ``(found, content)``: ``found`` is True when a box command occurs at all; ``content``
    is None when the last box is truncated (unbalanced braces) or empty. ``\\boxed 5`` (no
    braces) yields the following token.
    """
    last = None
    for last in _BOX_RE.finditer(text):  # only the last match is needed
        pass
    if last is None:
        return False, None
    return True, _parse_box(text, last, len(text))[1]


# Text allowed between two boxes that hold parts of one answer ("x=\boxed{2} or x=\boxed{3}",
# "\boxed{1}, \boxed{2}"): math delimiters, separators, and/or, spacing, an assignment prefix.
_BOX_GLUE_TOKEN = (
    r"\s+|\$|\\[()\[\]]|[,;]|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|\\(?:lor|vee)\b"
    r"|(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*="
)
_BOX_GLUE_RE = re.compile(r"(?:" + _BOX_GLUE_TOKEN + r")*")
_BOX_SEP_RE = re.compile(r"[,;=]|\\quad|\\qquad|\band\b|\bor\b|\\(?:lor|vee)\b")


def _joins_boxes(between: str) -> bool:
    """Whether the text between two boxes only joins them into one answer (and names a
    separator: two boxes separated by bare whitespace are not merged, the last one counts)."""
    if len(between) > 80 or not _BOX_GLUE_RE.fullmatch(between):
        return False
    return bool(_BOX_SEP_RE.search(between))


def boxed_answer(text: str) -> tuple[bool, str | None]:
    """The boxed answer of ``text``: the last box, merged with the boxes right before it when
    only separators join them (``x=\\boxed{2}`` and ``x=\\boxed{-3}`` -> ``2, -3``; identical
    boxes count once). ``(found, answer)`` as in :func:`last_boxed`."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return False, None
    content = _parse_box(text, matches[-1], len(text))[1]
    if content is None:
        return True, None
    items = [content]
    start = matches[-1].start()
    for m in reversed(matches[:-1]):
        end, prev = _parse_box(text, m, start)  # a box before ``start`` must close before it
        if prev is None or not _joins_boxes(text[end:start]):
            break
        items.append(prev)
        start = m.start()
    if len(set(items)) == 1:
        return True, content
    return True, ", ".join(reversed(items))
