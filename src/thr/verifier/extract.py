"""Answer extraction for the math verifier: where in a response its final answer is.

Precedence (docs/verifier.md): the last ``\\boxed{}`` (with the boxes just before it when only
separators join them), answer phrases and "Final Answer" headings, GSM8K ``####``, the last
display math, then the final line; chat end-of-turn tokens end the response. Pure ``re`` code
with bounded work per call (linear-time scanning), safe on every sampled completion.
:mod:`thr.verifier.normalize` normalises what this finds; :mod:`thr.verifier` builds the public API.
"""

from __future__ import annotations

import itertools
import math
import re

from thr.verifier.boxes import (  # noqa: F401 - last_boxed is re-exported (thr.data.problems)
    _BOX_GLUE_RE,
    _BOX_RE,
    _WORD_RE,
    OR_RE,
    _parse_box,
    all_boxes,
    boxed_answer,
    last_boxed,
    repair_escapes,
)

# ----------------------------------------------------------------------------- extraction

_SPECIAL_TOKEN_RE = re.compile(r"<\|[a-z_]{1,30}\|>|</s>|<eos>|<end_of_turn>")
_TURN_TOKEN_RE = re.compile(r"<\|(?:im_start|im_end|endoftext|eot_id|end)\|>|</s>|<eos>|<end_of_turn>")
_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_MAX_ANSWER_CHARS = 2000


_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answers?|the\s+answers?|answers?)(?:\s+to\s+[^.\n$]{1,60}?)?(?:\*\*)?\s*(?:is|:|=)\s*:?\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_SELF_CORRECTION_RE = re.compile(
    r"\b(?:wait|actually|mistake|however|re-?check|reconsider|let me|let's|hmm|correction|instead|but)\b",
    re.IGNORECASE,
)
_ANSWER_HEADING_RE = re.compile(r"(?:^|\n)[ \t#*]{0,12}final[ \t]+answer[ \t*:]{0,12}\n", re.IGNORECASE)
_MATH_OPEN = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_LABEL_LHS_RE = re.compile(r"^\s*(?:\\(?:text|textbf|mathrm|textnormal)\{[A-Za-z ]{1,40}\}\s*)+$")
_ARITH_CMD_RE = re.compile(r"\\(?:d|t|c)?frac|\\cdot|\\times|\\div|\\sqrt|\\left|\\right|\\pi|\\,|\\!")


def _is_arithmetic(s: str) -> bool:
    """A letter-free arithmetic expression (``2+3``, ``\\frac{12}{4}\\cdot 2``)."""
    s = _ARITH_CMD_RE.sub("", s)
    return bool(s.strip()) and re.fullmatch(r"[\d\s.,+\-*/^(){}\[\]]+", s) is not None


def math_value(s: str) -> str:
    """The claimed value of a math span taken outside a box: the last line of a multi-line
    display, and the right-hand side of ``2+3 = 5`` or ``\\text{Area} = 12`` (a letter-free or
    label-only left side); ``x = 2+3 = 5`` keeps its variable (``x = 5``). Other equations are
    kept whole."""
    s = re.split(r"\\(?:therefore|Rightarrow|implies|Longrightarrow)(?![a-zA-Z])", s.strip())[-1].strip()
    if "\\\\" in s and not re.search(r"\\begin\{(?:[pbvBV]?matrix|smallmatrix|array|cases)", s):
        s = re.sub(r"\\(?:begin|end)\{(?:align|aligned|gather|gathered|split|eqnarray)\*?\}", "", s)
        lines = [ln.replace("&", "").strip() for ln in s.split("\\\\") if ln.strip()]
        if lines:  # "x &= 2+3 \\\\ &= 5" continues one chain; otherwise the last line
            s = " ".join(lines) if lines[-1].startswith("=") else lines[-1]
    if re.search(r"[<>]|\\(?:le|ge|leq|geq|neq|ne|approx)\b", s):
        return s
    parts = _split_top_eq(s)
    if len(parts) < 2 or not parts[-1].strip():
        return s
    if any(re.search(r"[,;]", p) for p in parts[1:-1]):
        return s  # "p=-1, p=\\frac{15}{8}": a list of assignments, not one chain
    first = parts[0].strip()
    if all(_is_arithmetic(p) or _LABEL_LHS_RE.match(p) for p in parts[:-1]):
        return parts[-1].strip()
    if len(parts) > 2 and re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?", first):
        return first + " = " + parts[-1].strip()
    if len(parts) > 2 and all(_is_arithmetic(p) for p in parts[1:-1]):
        return parts[-1].strip()  # "\\frac{c}{a} = \\frac{6}{2} = 3"
    if len(parts) == 2 and _FUNC_LABEL_RE.fullmatch(first) and _is_arithmetic(parts[1]):
        return parts[1].strip()  # "f(2) = 5", "P(A) = \\frac{1}{4}": a named value
    return s


_FUNC_LABEL_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:'+)?\s*\([^()=]{1,30}\)")


def _split_top_eq(s: str) -> list[str]:
    """Split on ``=`` outside braces (``\\sum_{k=0}^{n}`` holds no top-level ``=``)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "=" and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _leading_math(rest: str) -> str | None:
    """Content of a math span that opens ``rest``; None when ``rest`` does not open with one
    (``""`` when it opens one that never closes)."""
    for open_, close in _MATH_OPEN:
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            if end < 0:
                return ""
            return rest[len(open_) : end].strip()
    return None


_MATH_TOKEN_RE = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\n")
_SPAN_CLOSE = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}


def _math_spans(text: str) -> list[tuple[int, int, str, bool]]:
    """Math spans of ``text`` in order: ``(start, end, content, is_display)``. One linear pass
    over the delimiters: an inline ``$`` closes on its own line; an opener with no closer
    after it is skipped (and so is every later opener of its kind)."""
    toks = [(m.start(), m.end(), m.group()) for m in _MATH_TOKEN_RE.finditer(text)]
    out = []
    dead: set[str] = set()
    i, n = 0, len(toks)
    while i < n:
        start, inner_start, tok = toks[i]
        if tok not in _SPAN_CLOSE or tok in dead:
            i += 1
            continue
        close = _SPAN_CLOSE[tok]
        j = i + 1
        while j < n and toks[j][2] != close and not (tok == "$" and toks[j][2] in ("\n", "$$")):
            j += 1
        if j >= n or toks[j][2] != close:
            if j >= n:
                dead.add(tok)  # no closer anywhere after: later openers of this kind fail too
            i += 1
            continue
        inner = text[inner_start : toks[j][0]].strip().rstrip(".,;").strip()
        out.append((start, toks[j][1], inner, tok in ("$$", "\\[")))
        i = j + 1
    return out


def _join_values(values: list[str], joiner: str = ", ") -> str | None:
    """One answer from the values of several math spans or boxes (duplicates count once)."""
    values = [v for v in values if v]
    if not values:
        return None
    if len(set(values)) == 1:
        return values[0]
    return joiner.join(values)


def _run_value(text: str, spans: list[tuple[int, int, str, bool]], run: list[int]) -> str | None:
    """The answer held by a run of math spans: their values, as alternatives (``" or "``) when
    ``or`` joins them (``$x=1$ or $x=2$``), else as an ordered list."""
    betweens = [text[spans[a][1] : spans[b][0]] for a, b in itertools.pairwise(run)]
    joiner = " or " if any(OR_RE.search(b) for b in betweens) else ", "
    return _join_values([math_value(spans[k][2]) for k in run], joiner)


def _span_run(text: str, spans: list[tuple[int, int, str, bool]], i: int, step: int) -> list[int]:
    """Indices of the run of spans from ``spans[i]`` (forward with ``step=1``, backward with
    ``-1``) joined only by separators (``$x=1$ and $x=2$``)."""
    run = [i]
    j = i + step
    while 0 <= j < len(spans):
        a, b = (spans[run[-1]], spans[j]) if step > 0 else (spans[j], spans[run[-1]])
        between = text[a[1] : b[0]]
        if len(between) > 80 or not _BOX_GLUE_RE.fullmatch(between) or a[3] != b[3]:
            break
        run.append(j)
        j += step
    return sorted(run)


def _answer_after_phrase(text: str) -> str | None:
    """Answer following the last "answer is" / "final answer:" phrase (or a "Final Answer"
    heading): a math span right after it, else the text up to the end of the sentence."""
    matches = list(_ANSWER_IS_RE.finditer(text))
    heading = list(_ANSWER_HEADING_RE.finditer(text))
    last_end = max([m.end() for m in matches[-1:] + heading[-1:]], default=0)
    if _SELF_CORRECTION_RE.search(text, last_end):
        return None  # "The answer is 5. Wait, that is wrong ...": not the final claim
    if heading and (not matches or heading[-1].end() > matches[-1].end()):
        rest = text[heading[-1].end() :].lstrip()
    elif matches:
        rest = text[matches[-1].end() :]
        if not rest.split("\n", 1)[0].strip():
            rest = rest.lstrip()  # "Answer:\n$$ 12 $$"
    else:
        return None
    rest = rest.replace("**", "").lstrip()
    if _leading_math(rest) is not None:  # math right after the phrase, with any joined by "and"/","
        spans = _math_spans(rest)
        if not spans or spans[0][0] != 0:
            return None  # an unclosed span
        if not spans[0][3] and "\n" in rest[: spans[0][1]]:
            return None
        return _run_value(rest, spans, _span_run(rest, spans, 0, 1))
    rest = rest.split("\n", 1)[0].strip()
    rest = re.split(r"\.\s+I hope|\.(?:\s|$)|;\s|,\s+(?=[A-Za-z]{3,})", rest, maxsplit=1)[0]
    rest = rest.strip().rstrip(".").strip()
    if not rest or len(rest) > 200:
        return None
    if len(rest.split()) > 2:  # a sentence after the phrase: the number it ends by stating
        claim = _LINE_CLAIM_RE.search(rest)
        if claim and not _NEGATION_RE.search(rest):
            return claim.group("ans").strip()
        number = _single_number(rest)
        if number is not None:  # "Final Answer: Jane started growing Sphere 3 hours ago."
            return number
    return rest


_GSM_RE = re.compile(r"####\s*([^\n]+)")
_PLAIN_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_LAST_LINE_NUM_RE = re.compile(r"^(?:" + _PLAIN_NUM + r")$|^[-+]?\\frac\{\d+\}\{\d+\}$")
_CURRENCY_NUM_RE = re.compile(
    r"^(?:\\?\$|€|£)\s?(?:" + _PLAIN_NUM + r")$|^(?:" + _PLAIN_NUM + r")\s?(?:\\?\$|€|£)$"
)
_LINE_CLAIM_RE = re.compile(
    r"(?:\b(?:is|are|was|were|equals|be|gives|get|got|obtain|makes)\b|\bit's)\s*\**\s*"
    r"(?P<ans>(?:\\?\$|€|£)?\s?(?:" + _PLAIN_NUM + r")(?:/\d+)?"
    r"(?:\s?(?:€|£)|\s+[a-z]{2,}|\s?[a-z]{1,3}[²³])?)\s*\**\s*[.!]?$"
)
_CONCLUSION_RE = re.compile(
    r"(?:therefore|thus|hence|in total|in conclusion|altogether|overall|finally)\b", re.IGNORECASE
)
_REFERENCE_BEFORE_RE = re.compile(
    r"\b(?:step|part|case|equation|eq|line|problem|question|figure|section|page|of|from|in|on|at|by|to|with|"
    r"for|than|over|under|after|before|per|each|every|about|around|nearly|almost)\.?\s*$",
    re.IGNORECASE,
)
_NUMBER_TOKEN_RE = re.compile(r"(?<![\w.])(?:\\?\$)?(?:" + _PLAIN_NUM + r")(?![\w.]*\d)(?!\w)")
_SIMPLE_ASSIGN_RE = re.compile(r"\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=[^=]+")
_BOLD_RE = re.compile(r"\*\*([^*]{1,60})\*\*")
_QUIET_TAIL_RE = re.compile(r"[\sA-Za-z.,!'()-]{0,60}")
_DEFINITE_TAIL_RE = re.compile(r"is (?:the|our|my) (?:answer|solution|solution set|result)", re.IGNORECASE)


_NEGATION_RE = re.compile(r"\b(?:not|no|never|cannot|can't|isn't|aren't|wasn't|won't|without)\b", re.IGNORECASE)


def _single_number(sentence: str) -> str | None:
    """The one number a math-free sentence states, when it holds exactly one that does not
    follow a preposition or a reference word (``... in step 3``) and the sentence has no
    negation (``... is not 5``); None otherwise."""
    if _math_spans(sentence) or _NEGATION_RE.search(sentence):
        return None
    numbers = list(_NUMBER_TOKEN_RE.finditer(sentence))
    if len(numbers) != 1 or _REFERENCE_BEFORE_RE.search(sentence[: numbers[0].start()]):
        return None
    return numbers[0].group().replace("\\$", "").replace("$", "")


def _strip_delims(s: str) -> str:
    """``s`` without one pair of enclosing math delimiters (and markdown bold)."""
    s = s.strip().replace("**", "").strip()
    for open_, close in _MATH_OPEN:
        if s.startswith(open_) and s.endswith(close) and len(s) > len(open_) + len(close):
            inner = s[len(open_) : -len(close)]
            if open_ == "$" and "$" in inner:
                continue
            return inner.strip()
    return s


def _is_answer_only(s: str, *, expressions: bool) -> bool:
    """Whether ``s`` (one line, delimiters stripped) is just an answer: a number (with a
    currency sign or one unit word), or, with ``expressions``, a formula whose only words are
    LaTeX commands, ``\\text{}`` contents, "and"/"or", or a single trailing unit word."""
    s = s.strip().rstrip(".").strip()
    if not s or len(s) > 150:
        return False
    if _LAST_LINE_NUM_RE.match(s) or _CURRENCY_NUM_RE.match(s):
        return True
    if re.fullmatch(r"(?:" + _PLAIN_NUM + r")\s+[a-z]{2,}", s):
        return True
    if not expressions or re.search(r"[.!?:;]\s", s):
        return False  # sentences ("9*5=45. 45-8=37"), not one answer
    # an irrational form ("3\\sqrt{2} + 1", "2\\pi") is an answer, not the question's arithmetic;
    # a perfect-square root ("\\sqrt{49} + 3") may be the question's own expression
    roots = re.findall(r"\\sqrt\s*\{?\s*(\d+)\s*\}?", s)
    radical = re.search(r"\\(?:sqrt|pi)(?![a-zA-Z])", s) is not None and not any(
        math.isqrt(int(r)) ** 2 == int(r) for r in roots if len(r) < 30
    )
    if re.search(r"[-+*/^=:]\s*$", s) or (
        not radical and _is_arithmetic(s) and re.search(r"[\d)}]\s*[-+*/^]", s)
    ):
        return False  # unfinished ("26+") or the question's own arithmetic ("46-24")
    if "$" in s.replace("\\$", "") or "\\(" in s:
        return False  # a sentence around math, not a bare formula
    bare = re.sub(r"\\(?:text|textbf|textnormal|mbox|mathrm|begin|end)\s*\{[^{}]*\}", " ", s)
    words = [w for w in _WORD_RE.findall(bare) if w.lower() not in ("and", "or")]
    return not words or bool(
        re.fullmatch(r"(?:\\text\{)?\(?[A-Za-z]\)?\}?|[A-Za-z]{2,20}", s)
    )


def _last_display(text: str) -> str | None:
    """The last ``\\[...\\]``/``$$...$$`` block (with the blocks joined to it by separators only)
    when nothing but a short word-only sentence follows it (no digits, no further math)."""
    spans = [sp for sp in _math_spans(text) if sp[3]]
    if not spans:
        return None
    tail = text[spans[-1][1] :].strip()
    if not _QUIET_TAIL_RE.fullmatch(tail):
        return None
    return _run_value(text, spans, _span_run(text, spans, len(spans) - 1, -1))


def _last_line_inline(line: str) -> str | None:
    """The last ``$...$``/``\\(...\\)`` of the final line (with the spans joined to it by
    separators: ``$x=1$ and $x=2$``) when only a short, word-only tail follows it (``The area is
    $12$ square units.``); a unit-like tail after a plain number is kept with it."""
    spans = [sp for sp in _math_spans(line) if not sp[3]]
    if not spans:
        return None
    tail = line[spans[-1][1] :].strip().replace("**", "")
    percent = re.fullmatch(r"\\?%\s*\.?", tail) is not None  # "$28$ %"
    if percent:
        tail = ""
    if not _QUIET_TAIL_RE.fullmatch(tail) or len(tail.split()) > 3:
        return None
    run = _span_run(line, spans, len(spans) - 1, -1)
    value = _run_value(line, spans, run)
    if value is None:
        return None
    if percent:
        return value + "\\%" if len(run) == 1 and _LAST_LINE_NUM_RE.match(value) else None
    words = tail.rstrip(".!").strip()
    if _DEFINITE_TAIL_RE.fullmatch(words):
        return value  # "Therefore $x \\geq 5$ is the solution."
    if words and len(run) == 1 and _LAST_LINE_NUM_RE.match(value) and re.fullmatch(r"[a-z]{2,}(?: [a-z]{2,})?", words):
        return value + " " + words
    if len(words.split()) > 2:
        return None  # "$x=2$ is one solution": not a final statement
    return value


def _final_line(text: str) -> str | None:
    """The final non-empty line when it is only an answer (a number, a math span, or, for a
    one-line response, a bare formula), or ends by stating a number (``So the total is 18.``)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    lines[-1] = lines[-1][-1000:]  # bounded regex work on a huge last line
    bold = _BOLD_RE.findall(lines[-1])
    if len(bold) == 1:  # "So Maria has **56** stickers."
        inner = _strip_delims(bold[0]).rstrip(".").strip()
        if _LAST_LINE_NUM_RE.match(inner) or _CURRENCY_NUM_RE.match(inner):
            return inner
    last = lines[-1].replace("**", "").strip()
    inner = _strip_delims(last).rstrip(".").strip()
    delimited = inner != last.rstrip(".").strip()
    if _is_answer_only(inner, expressions=delimited or len(lines) == 1):
        if delimited:
            return math_value(inner)
        pieces = re.split(r",|\bor\b|\band\b", inner)
        if any("=" in q and not _SIMPLE_ASSIGN_RE.fullmatch(q) for q in pieces):
            return None  # a bare "48+25=73" line is working, not an answer statement
        return inner
    inline = _last_line_inline(last)
    if inline is not None:
        return inline
    m = _LINE_CLAIM_RE.search(last)
    if m:
        return m.group("ans").strip()
    sentence = re.sub(r"\s*I hope it is correct\.?$", "", last, flags=re.IGNORECASE)
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", sentence)[-1]  # the last sentence of the line
    if _CONCLUSION_RE.match(sentence) and re.search(r"[.!]$", sentence) and not _math_spans(sentence):
        # "Therefore, Janet makes $18 every day at the market." (not "... from step 3.")
        return _single_number(sentence)
    return None


def answer_region(response: str) -> str | None:
    """The part of a completion that may hold its final answer (think-trace rule).

    After the last ``</think>`` when the trace is closed; None when a ``<think>`` is opened and
    never closed, also one opened after the last ``</think>`` (the completion was cut off
    mid-thought); else the whole text.
    """
    response = repair_escapes(response)
    for m in _TURN_TOKEN_RE.finditer(response):
        if response[: m.start()].strip() and _SPECIAL_TOKEN_RE.sub("", response[: m.start()]).strip():
            response = response[: m.start()]  # the turn ended; what follows is not the answer
            break
    response = _SPECIAL_TOKEN_RE.sub("", response)
    if _THINK_CLOSE in response:
        response = response.rsplit(_THINK_CLOSE, 1)[1]
    if _THINK_OPEN in response:
        return None  # a trace opened (again) and never closed: cut off mid-thought
    return response


def _text_after_last_box(text: str) -> str:
    """The text after the last (closed) box."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return ""
    end = _parse_box(text, matches[-1], len(text))[0]
    return text[end:]


# the text ends on a connective, maybe with a math span opened after it and never closed
# ("The final answer is $x = 2$ or", "... \\boxed{2} and $x="): cut off before the rest of the answer
_CUT_AFTER_JOIN_RE = re.compile(
    r"(?:\bor|\band|\\lor|\\vee|\\text\{\s*(?:or|and)\s*\}?)[\s*]*"
    r"(?:\$\$?[^$]{0,300}|\\\((?:(?!\\\)).){0,300}|\\\[(?:(?!\\\]).){0,300})?$",
    re.DOTALL,
)


def extract_from_text(text: str) -> str | None:
    """Extraction precedence on one region (the first that applies gives the answer):

    1. the last box (merged with the boxes just before it when only separators join them);
       a truncated last box gives None, never an earlier box;
    2. the text after the last "final answer is" / "the answer is" / "answer:" phrase or a
       "Final Answer" heading (a box inside it, else a math span, else the sentence);
    3. GSM8K's last ``#### N``;
    4. the last display math (``\\[...\\]``, ``$$...$$``) when only a short word-only sentence
       follows it;
    5. the final line: only an answer (a number, a math span; for a one-line response any bare
       formula), its last inline math with a short word-only tail, or a sentence ending in a
       stated number (``... is 18.``).

    A text that ends on ``or``/``and`` (with at most an unclosed math span after it) was cut off
    before its answer was complete: None.
    """
    if _CUT_AFTER_JOIN_RE.search(text[-400:].rstrip()):
        return None
    found, boxed = boxed_answer(text)
    if found:
        if boxed is None:
            return None  # a truncated last box means no answer, never an earlier box
        after = _text_after_last_box(text)
        if after and (_ANSWER_IS_RE.search(after) or _ANSWER_HEADING_RE.search(after)):
            later = _answer_after_phrase(after)  # "\\boxed{255} ... The final answer is $10,455$."
            if later is not None and not _BOX_RE.search(later) and _is_answer_only(later, expressions=True):
                return later
        return boxed
    phrase = _answer_after_phrase(text)
    if phrase is not None:
        found, inner = boxed_answer(phrase)
        return inner if found else phrase
    gsm = _GSM_RE.findall(text)
    if gsm:
        return gsm[-1].strip() or None
    display = _last_display(text)
    if display is not None:
        return display
    return _final_line(text)
