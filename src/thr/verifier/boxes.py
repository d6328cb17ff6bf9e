"""Boxes for the math verifier's answer extraction: ``\\boxed{}``/``\\fbox{}`` parsing (balanced
braces, truncation), the last box, and several boxes that hold one answer.

Split out of :mod:`thr.verifier.extract`, which re-exports what it uses. Pure ``re`` code.
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
# LaTeX whose backslash escapes were decoded as control characters (a JSON or non-raw Python
# string: "\boxed" -> backspace + "oxed", "\frac" -> form feed + "rac"). Only characters that
# never occur in written text are repaired: a tab or a newline may be real ("\t" + "ext" is not
# taken for "\text").
_DAMAGED_RE = re.compile(r"[\x07\x08\x0b\x0c](?=[a-zA-Z])")
_DAMAGED = {"\x07": "\\a", "\x08": "\\b", "\x0b": "\\v", "\x0c": "\\f"}


def repair_escapes(text: str) -> str:
    """Undo escape damage: a bell, backspace, vertical tab or form feed before a letter stands
    for a backslash and ``a``/``b``/``v``/``f`` (``\\x08oxed{5}`` -> ``\\boxed{5}``,
    ``\\x0crac{1}{2}`` -> ``\\frac{1}{2}``)."""
    return _DAMAGED_RE.sub(lambda m: _DAMAGED[m.group(0)], text)


_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


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


OR_RE = re.compile(r"\bor\b|\\(?:lor|vee)\b")
_PREFIX_RE = re.compile(r"((?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?)\s*=\s*(?:\$|\\[(\[])?\s*$")


def _prefix_names(glues: list[str], before_first: str) -> list[str | None]:
    """The variable each box is assigned to (``x = \\boxed{2}``), in order; None where none."""
    return [m.group(1) if m else None for m in map(_PREFIX_RE.search, [before_first[-40:], *glues])]


def alternatives_joiner(glues: list[str], before_first: str) -> str:
    """How several boxes (or math spans) that hold one answer are joined: ``" or "`` when they
    are alternatives, i.e. the text between them says ``or``/``\\lor`` or each one is assigned to
    the same variable (``$x=\\boxed{2}$ and $x=\\boxed{-3}$``); ``", "`` (an ordered list)
    otherwise. ``glues`` are the texts between the boxes, in order. An ``or`` gold is compared in
    any order, an ordered list item by item."""
    if any(OR_RE.search(g) for g in glues):
        return " or "
    names = set(_prefix_names(glues, before_first))
    return " or " if len(names) == 1 and None not in names else ", "


def boxed_answer(text: str) -> tuple[bool, str | None]:
    """The boxed answer of ``text``: the last box, merged with the boxes right before it when
    only separators join them (``x=\\boxed{2}`` or ``x=\\boxed{-3}`` -> ``2 or -3``,
    ``\\boxed{2}, \\boxed{-3}`` -> ``2, -3``: see :func:`alternatives_joiner`; identical boxes
    count once). ``(found, answer)`` as in :func:`last_boxed`."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return False, None
    content = _parse_box(text, matches[-1], len(text))[1]
    if content is None:
        return True, None
    items = [content]
    glues = []
    start = matches[-1].start()
    for m in reversed(matches[:-1]):
        end, prev = _parse_box(text, m, start)  # a box before ``start`` must close before it
        if prev is None or not _joins_boxes(text[end:start]):
            break
        items.append(prev)
        glues.append(text[end:start])
        start = m.start()
    if len(set(items)) == 1:
        before = text[max(0, start - 40) : start] if "," in content else ""
        prefix = _PREFIX_RE.search(before) if "=" in before else None
        if prefix and _has_top_comma(content) and not _LIST_BEFORE_RE.search(before[: prefix.start()]):
            # "n = \\boxed{1, -2}": the values of n (not "a, b = \\boxed{3, 4}", "$q$ and $r = ...")
            return True, f"{prefix.group(1)} = {content}"
        return True, content
    items.reverse()
    glues.reverse()
    names = _prefix_names(glues, text[:start])
    if len({n for n in names if n}) > 1:  # "$b = \\boxed{1}$, $a = \\boxed{2}$": keep the names
        items = [f"{n} = {q}" if n else q for n, q in zip(names, items)]
    return True, alternatives_joiner(glues, text[:start]).join(items)


# a variable named before the prefix: "a, b = \\boxed{3, 4}", "$q$ and $r = \\boxed{3, 2}$"
_LIST_BEFORE_RE = re.compile(r"(?:,|\band)\s*(?:\$|\\\()?\s*$")


def _has_top_comma(s: str) -> bool:
    """A comma outside all brackets: ``1, -2`` is a list, ``(1, 2)`` and ``\\frac{1,2}`` are not."""
    depth = 0
    for c in s:
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            return True
    return False


def all_boxes(text: str, *, max_words_between: int | None = None) -> list[str]:
    """Contents of every box of ``text`` in order; [] when one is truncated or empty, or (with
    ``max_words_between``) when two boxes are separated by more words than that or by a
    sentence end."""
    out = []
    prev_end = None
    for m in _BOX_RE.finditer(text):
        if max_words_between is not None and prev_end is not None:
            between = text[prev_end : m.start()]
            if len(_WORD_RE.findall(between)) > max_words_between or re.search(r"[.!?:]", between):
                return []
        prev_end, content = _parse_box(text, m, len(text))
        if content is None:
            return []
        out.append(content)
    return out
