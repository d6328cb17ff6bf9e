"""Helpers for the math verifier: LaTeX normalisation and exact numbers (answer extraction:
:mod:`thr.verifier.extract`; the sympy-side guards that run in the worker process:
:mod:`thr.verifier.worker`).

Pure ``re``/``fractions`` code with bounded work per call, safe to run in-process on every
completion (no sympy, no risk of hanging). :mod:`thr.verifier` builds the public API on top of
this module.
"""

from __future__ import annotations

import re
from fractions import Fraction

from thr.verifier.extract import _MATH_OPEN, _MAX_ANSWER_CHARS

# ----------------------------------------------------------------------------- normalisation

_REMOVE_TOKENS = (
    "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "\\bigl", "\\bigr",
    "\\Bigl", "\\Bigr", "\\big", "\\Big", "\\limits",
)
# one pass over all spacing/sizing tokens (longest first), not one re.sub per token: sizing
# commands go, spacing becomes a space (so "2\\,3" does not turn into the number 23)
_REMOVE_RE = re.compile(
    r"(?<!\\)(?:" + "|".join(re.escape(t) for t in sorted(_REMOVE_TOKENS, key=len, reverse=True)) + r")(?![a-zA-Z])"
)
_SPACING_TOKENS = frozenset(("\\!", "\\,", "\\;", "\\:"))
_QUAD_SEP_RE = re.compile(r"(?<=[,;])\s*\\q?quad(?![a-zA-Z])|\\q?quad(?![a-zA-Z])\s*(?=[,;])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\^\s*\{\s*\\text\{\s*o\s*\}\s*\}")
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|texttt|textup|mbox|hbox|mathrm|mathbf|mathit|mathsf|mathtt|textnormal|operatorname)"
    r"\s*\{([^{}]*)\}"
)
_SHORT_UNITS = (
    "cm|mm|km|m|nm|um|g|kg|mg|s|ms|h|hr|hrs|min|L|mL|ml|ft|in|yd|mi|lb|lbs|oz|mph|Hz|kHz|MHz|GHz|J|kJ|"
    "W|kW|V|A|N|Pa|kPa|K|eV|keV|MeV|GeV|mol|AU|pc|cal|kcal"
)
_UNIT_WORD_RE = re.compile(
    r"^(?P<num>[-+]?(?:\d[\d,]*)?\.?\d+)\s+(?:(?:[a-z]{3,}|(?:" + _SHORT_UNITS + r"))(?:\^\{?[23]\}?)?\.?\s*)+$"
)
_THOUSANDS_RE = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
# a thousands number as one item of a list whose items are separated otherwise ("1,000, 2")
_ITEM_THOUSANDS_RE = re.compile(r"(?<![\d.,])[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?(?!\d|,\d)")
# digits after a letter, "_" or "^" are an index or exponent ("\\log_2 8", "x^2 3"): no number
_SPACE_GROUPS_RE = re.compile(r"(?<![\w^.])[1-9]\d{0,2}(?:\s+\d{3})+(?!\d)")  # "12 345", "1\\,000\\,000"
_DIGIT_GAP_RE = re.compile(r"(?<![\w^.])(\d+(?:\.\d+)?)\s+(?=\d)")
# an item separator made by normalisation ("or", "and", "\\lor"): a comma only once the
# thousands and decimal-comma rules, which read literal commas, are done
_SEP = "\ue000"  # a private-use character: no whitespace, never in an answer
# words that qualify a number ("2 or more", "5 at least") rather than name its unit
_HEDGE_RE = re.compile(
    r"\b(?:or|and|more|less|fewer|than|least|most|over|under|above|below|about|approx\w*|roughly|nearly|"
    r"almost|around|not|plus|minus|only|between|exactly|maybe|possibly|greater|smaller|larger|up)\b",
    re.IGNORECASE,
)
_ASSIGN_THOUSANDS_RE = re.compile(r"^([a-zA-Z](?:_\{?\w+\}?)?)\s*=\s*([-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?)$")
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF_SHORT_RE = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\d|[a-zA-Z])")
_FRAC_FIRST_SHORT_RE = re.compile(r"\\frac\s*(\d)\s*\{")
_WS_RE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])|\s+")
_ASSIGN_RE = re.compile(
    r"^\s*([a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+|\((?:[a-zA-Z],)+[a-zA-Z]\))\s*(?:=|\\in(?![a-zA-Z]))\s*(?P<rhs>[^=<>]+)$"
)


_SPAN_UNIT_RE = re.compile(r"^\$([^$]{1,60})\$\s*([a-z][a-z ]{1,30})$")
_UNICODE_MATH = (
    ("\u2212", "-"), ("\u00d7", "\\times "), ("\u00b7", "\\cdot "), ("\u22c5", "\\cdot "), ("\u00f7", "\\div "),
    ("\u03c0", "\\pi "), ("\u221e", "\\infty "), ("\u2264", "\\le "), ("\u2265", "\\ge "), ("\u2260", "\\ne "),
    ("\u221a", "\\sqrt"), ("\u00bd", "\\frac{1}{2}"), ("\u00bc", "\\frac{1}{4}"), ("\u00be", "\\frac{3}{4}"),
)
_CURRENCY_RE = re.compile(r"^\s*(?:€|£|¥|\\euro|\\pounds|(?:US|CA|AU)?\\?\$|USD|EUR|GBP|Rs\.?)\s*(?=[-+.\d])|(?<=\d)\s*(?:€|£|USD|EUR|GBP)\s*$")


def _unwrap_text(s: str) -> str:
    """Replace ``\\text{...}``-like commands by their content, innermost first."""
    for _ in range(5):
        new = _TEXT_CMD_RE.sub(lambda m: m.group(1), s)
        if new == s:
            break
        s = new
    return s


def _strip_units(s: str) -> str:
    """Drop a trailing ``\\text{unit}`` after a number, and plain unit words (``10 cm``); never
    words that qualify the number (``2 \\text{ or more}``, ``5 at least``: see ``_HEDGE_RE``)."""
    s = re.sub(
        r"(?<=[\d}])\s*\\(?:text|textbf|textnormal|textrm|textit|mbox|mathrm)\s*"
        r"\{\s*[a-zA-Z][a-zA-Z .\^\d/]*\}\s*(\^\s*\{?\d\}?)?$",
        lambda m: m.group() if _HEDGE_RE.search(m.group()) else "",
        s,
    )
    s = re.sub(r"(?<=\d)\s?[a-zA-Z]{1,3}[²³]$", "", s)  # "12 m²"
    m = _UNIT_WORD_RE.match(s)
    if m and not _HEDGE_RE.search(s[m.end("num") :]):
        return m.group("num")
    return s


_UNIT_NUM_RE = re.compile(
    r"^(?P<num>[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:\s*(?:\\times|\\cdot)\s*10\^\{?[-+]?\d+\}?)?)\s*(?P<unit>.+)$"
)
_UNIT_TEXT_RE = re.compile(r"(?:[A-Za-z]+|\^\{?-?\d\}?|/|\s|\\cdot|\.|\(|\))+")
_UNIT_SYNONYMS = {
    "meter": "m", "metre": "m", "centimeter": "cm", "centimetre": "cm", "millimeter": "mm",
    "millimetre": "mm", "kilometer": "km", "kilometre": "km", "second": "s", "sec": "s",
    "minute": "min", "mins": "min", "hour": "h", "hr": "h", "hrs": "h", "gram": "g", "kilogram": "kg",
    "liter": "L", "litre": "L", "l": "L", "milliliter": "mL", "millilitre": "mL", "ml": "mL",
    "foot": "ft", "feet": "ft", "inch": "in", "inches": "in", "yard": "yd", "mile": "mi",
    "pound": "lb", "lbs": "lb", "dollar": "usd", "usd": "usd", "buck": "usd", "cent": "cent",
    "euro": "eur", "degree": "deg", "percent": "%", "percentage": "%", "pct": "%", "unit": "unit",
}


def _unit_word(w: str) -> str:
    """Canonical spelling of one unit word (plural and long forms folded)."""
    low = w.lower()
    if low in _UNIT_SYNONYMS:
        return _UNIT_SYNONYMS[low]
    if len(w) > 3 and low.endswith("s") and low[:-1] in _UNIT_SYNONYMS:
        return _UNIT_SYNONYMS[low[:-1]]
    if len(w) > 3:
        return low[:-1] if low.endswith("s") and not low.endswith("ss") else low
    return w


def unit_of(raw: str) -> str | None:
    """Canonical unit written after a number (``10\\text{ cm}^2`` -> ``cm^2``, ``\\$5`` ->
    ``usd``, ``90^\\circ`` -> ``deg``, ``5 meters`` -> ``m``); None when the answer is not a
    number with a unit. Used to reject two answers with the same number in different units."""
    s = str(raw).strip()
    if not s or len(s) > 200:
        return None
    m = _SPAN_UNIT_RE.match(s)
    if m:  # "$125$ miles" is 125 miles, not dollars
        s = m.group(1).strip() + " " + m.group(2)
    s = s.replace("²", "^2").replace("³", "^3")
    for open_, close in _MATH_OPEN:
        if s.startswith(open_) and s.endswith(close) and len(s) >= len(open_) + len(close):
            s = s[len(open_) : len(s) - len(close)].strip()
    for tok in _REMOVE_TOKENS:
        s = s.replace(tok, " ")
    s = s.replace("{,}", ",").replace("~", " ").replace("\\ ", " ")
    s = _unwrap_text(s).strip().rstrip(".").strip()
    if re.match(r"^(?:\\\$|\$|US\$|USD)\s*[-+.\d]", s):
        return "usd"
    if re.match(r"^(?:€|\\euro|EUR)\s*[-+.\d]", s):
        return "eur"
    m = _UNIT_NUM_RE.match(s)
    if not m:
        return None
    unit = m.group("unit").strip()
    if not re.match(r"[A-Za-z]", unit) and not _DEGREE_RE.fullmatch(unit) and unit not in ("\\%", "%"):
        return None
    if re.match(r"[A-Za-z]", s[m.end("num") : m.end("num") + 1]) and not re.search(r"\\(?:text|mbox|mathrm)", raw):
        return None  # "2x": a coefficient and a variable, not a unit
    if _DEGREE_RE.fullmatch(unit):
        return "deg"
    if unit in ("\\%", "%"):
        return "%"
    if not _UNIT_TEXT_RE.fullmatch(unit) or re.search(r"\b(?:and|or)\b", unit) or not re.search(r"[A-Za-z]", unit):
        return None
    unit = re.sub(r"\^\{?(-?\d)\}?", r"^\1", unit).replace("\\cdot", "*")
    unit = re.sub(r"\bsquare\s+([A-Za-z]+)", r"\1^2", unit)
    unit = re.sub(r"\bcubic\s+([A-Za-z]+)", r"\1^3", unit)
    unit = re.sub(r"\bsq\.?\s+([A-Za-z]+)", r"\1^2", unit)
    unit = re.sub(r"[A-Za-z]+", lambda w: _unit_word(w.group()), unit)
    return re.sub(r"\s+", "", unit) or None


def split_assignment(s: str) -> tuple[str | None, str]:
    """``("x", "3")`` for a normalised single-variable assignment ``x=3``; ``(None, s)`` otherwise.
    A one-character index loses its braces (``y_{1}=2`` -> ``("y_1", "2")``)."""
    m = _ASSIGN_RE.match(s)
    if m:
        return re.sub(r"_\{(\w)\}", r"_\1", m.group(1)), m.group("rhs").strip()
    return None, s


def normalize_core(s: str) -> str:
    """:func:`normalize_answer` without removing an assignment's left-hand side."""
    s = str(s).strip()
    if len(s) > _MAX_ANSWER_CHARS:
        return s
    for open_, close in _MATH_OPEN:
        if s.startswith(open_) and s.endswith(close) and len(s) >= len(open_) + len(close):
            s = s[len(open_) : len(s) - len(close)].strip()
    s = s.replace("\n", " ").rstrip(".").strip()
    m = _SPAN_UNIT_RE.match(s)
    if m:  # "$125$ miles": a math span and a unit word
        s = m.group(1).strip() + " " + m.group(2)
    s = re.sub(r"(?<=\d),\\!\s*(?=\d{3})", ",", s)  # "11,\\! 111": a LaTeX thousands separator
    for uni, tex in _UNICODE_MATH:
        if uni in s:
            s = s.replace(uni, tex)
    if "\\" in s:
        s = _REMOVE_RE.sub(lambda m: " " if m.group() in _SPACING_TOKENS else "", s)
        s = _QUAD_SEP_RE.sub(" ", s)  # "m = 4, \\quad n = 7"
    s = re.sub(r"(?<!\\)\\ ", " ", s).replace("~", " ").replace("{,}", ",").replace("**", "^")
    s = re.sub(r"\\(?:d|t|c)frac", r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = re.sub(r"(?<=\d)\s*(?:percent(?:age)?|pct)\b", "%", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = _CURRENCY_RE.sub("", s)
    s = _strip_units(s.strip())
    s = _unwrap_text(s).strip()
    s = _strip_units(s)  # "\\text{12 cm}" is "12 cm" once unwrapped
    s = re.sub(r"\s*\\(?:lor|vee)\s*", " or ", s)
    s = re.sub(r"^(?:\\approx|\\sim|≈|about|approximately)\s*", "", s)
    s = re.sub(r"^([a-zA-Z])\s*(?:\\approx|≈)\s*(?=[-+.\d])", r"\1=", s)  # "x \\approx 11": x = 11
    s = re.sub(r"(?<=[)\]])\s*or\s*(?=[(\[])", _SEP, s)  # "(11,7)or(7,11)"
    s = re.sub(r"\s*,?\s+(?:and|or)\s+", _SEP, s)  # "2 and -2", "1, 2, and 3" -> comma lists
    s = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF_SHORT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_FIRST_SHORT_RE.sub(r"\\frac{\1}{", s)
    s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    s = s.strip().rstrip(".").strip()
    s = _digit_groups(s)
    s = _WS_RE.sub(lambda m: m.group(1) + " " if m.group(1) else "", s)
    if ";" in s and "," not in s and _SEP not in s:  # "(1; 2)", "x=1; x=2": semicolons as separators
        s = s.replace(";", ",")
    s = s.replace(_SEP, ",")
    s = re.sub(r"^([-+]?)0+(?=\d)", r"\1", s)
    s = re.sub(r"^\(([A-Z])\)$", r"\1", s)  # multiple-choice "(C)" -> "C"
    if re.fullmatch(r"\{[^{}]*,[^{}]*\}", s):  # "{1,2,3}" written without backslashes: a set
        s = "\\{" + s[1:-1] + "\\}"
    return _expand_pm(s.removeprefix("+"))


def _digit_groups(s: str) -> str:
    """Digit grouping, read from what the answer writes (before whitespace is dropped):
    spaces between digits group thousands only in groups of exactly three (``12 345``,
    ``1\\,000``); any other gap between digits (``2\\,3``, ``2 1/2``) is kept as ``~``, so the
    answer is no number. A literal comma groups thousands in a whole number (``1,000``), the
    value of a variable (``N = 12,600``), or an item of a list whose items are separated by
    ``, ``, ``;`` or a word (``1,000, 2`` is 1000 and 2); a separator made by normalisation
    (``_SEP``: ``2 or 500``) never does."""
    s = _SPACE_GROUPS_RE.sub(lambda m: re.sub(r"\s+", "", m.group()), s)
    s = _DIGIT_GAP_RE.sub(r"\1~", s)
    if _THOUSANDS_RE.match(s):
        return s.replace(",", "")
    m = _ASSIGN_THOUSANDS_RE.match(s)
    if m:  # "x = 1,000": the thousands rule for the value of a variable
        return m.group(1) + "=" + m.group(2).replace(",", "")
    if re.search(r",\s|;|" + _SEP, s):
        s = _ITEM_THOUSANDS_RE.sub(lambda m: m.group().replace(",", ""), s)
    return s


def _expand_pm(s: str) -> str:
    """``a\\pm b`` -> ``a+b,a-b`` (a bare list) when ``\\pm`` occurs once and no comma is present."""
    if s.count("\\pm") != 1 or "," in s or "\\mp" in s:
        return s
    if "=" in s:  # "x = \\pm 3" -> "x=3,-3"
        lhs, rhs = split_assignment(s)
        if lhs is None or "=" in rhs:
            return s
        return f"{lhs}={_expand_pm(rhs)}"
    pre, post = s.split("\\pm")
    if not post:
        return s
    return f"{pre}+{post},{pre}-{post}" if pre else f"{post},-{post}"


def normalize_answer(s: str) -> str:
    """String-level normalisation of an answer, used for fast exact comparison.

    In order: strip math delimiters (``$``, ``\\(``, ``\\[``), spacing and sizing commands
    (``\\left``, ``\\,`` ...), degree marks (``^\\circ``), percent signs (``50\\%`` -> ``50``),
    dollar signs, trailing units (``\\text{ cm}``, ``10 meters``), ``\\text{}`` wrappers;
    ``\\dfrac``/``\\tfrac`` -> ``\\frac`` with braces added (``\\frac12`` -> ``\\frac{1}{2}``),
    ``\\sqrt2`` -> ``\\sqrt{2}``, ``**`` -> ``^``; ``or``/``and`` between items -> ``,``;
    digit grouping written in the answer (``1,000`` and ``1\\,000`` -> ``1000``; other gaps
    between digits -> ``~``: see :func:`_digit_groups`); all whitespace and a trailing period; leading zeros of integers
    (``033`` -> ``33``); ``(C)`` -> ``C``; finally the left-hand side of a single-variable
    assignment (``x = 3`` -> ``3``).
    """
    return split_assignment(normalize_core(s))[1]


# ----------------------------------------------------------------------------- exact numbers

_INT_RE = re.compile(r"^-?\d+$")
_DEC_RE = re.compile(r"^-?(?:\d+\.\d*|\.\d+)$")
_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH_RE = re.compile(r"^(-?\d+)/(-?\d+)$")
_SCI_RE = re.compile(r"^(-?(?:\d+\.?\d*|\.\d+))(?:e|E|\\times10\^\{?)([-+]?\d+)\}?$")
_MAX_DIGITS = 400


def as_rational(s: str) -> tuple[Fraction, int] | None:
    """Exact value of a normalised plain number, with its count of written decimals.

    Accepts integers, decimals, ``\\frac{a}{b}``, ``a/b``, ``-\\frac{a}{b}`` and scientific
    notation (``1.5\\times10^{3}``). The second item is the number of decimal places written
    (-1 for exact forms: integers and fractions). None when ``s`` is not such a number.
    """
    if not s or len(s) > _MAX_DIGITS:
        return None
    try:
        if _INT_RE.match(s):
            return Fraction(int(s)), -1
        if _DEC_RE.match(s):
            return Fraction(s), len(s.split(".", 1)[1])
        m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
        if m:
            groups = m.groups()
            sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
            num, den = int(groups[-2]), int(groups[-1])
            if den == 0:
                return None
            return sign * Fraction(num, den), -1
        m = _SCI_RE.match(s)
        if m and abs(int(m.group(2))) < 300:
            mant = m.group(1)
            places = len(mant.split(".", 1)[1]) if "." in mant else 0
            return Fraction(mant) * Fraction(10) ** int(m.group(2)), max(places - int(m.group(2)), 0)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _terminates(q: Fraction) -> bool:
    """Whether ``q`` has a finite decimal expansion."""
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def rationals_match(gold: tuple[Fraction, int], pred: tuple[Fraction, int]) -> bool:
    """Exact equality, plus a rounded decimal for a non-terminating exact rational.

    A decimal written with at least 4 significant digits matches an exact rational with an
    infinite expansion when it equals that rational rounded or truncated to the written places
    (``0.3333`` and ``0.6667``/``0.6666`` match ``1/3`` and ``2/3``; ``0.333`` does not).
    Decimals against decimals or terminating fractions must be exactly equal (``1.6 != 1.63``).
    """
    (g, gp), (p, pp) = gold, pred
    if g == p:
        return True
    for exact, dec, places in ((g, p, pp), (p, g, gp)):
        if places < 1 or _terminates(exact):
            continue
        sig = len(str(abs(dec.numerator * 10**places // dec.denominator)).lstrip("0"))
        if sig < 4:
            continue
        scale = Fraction(10) ** places
        rounded = Fraction(round(exact * scale)) / scale
        truncated = Fraction(int(exact * scale)) / scale
        if dec in (rounded, truncated):
            return True
    return False


# ----------------------------------------------------------------------------- structure


def split_top(s: str) -> list[str]:
    """Split on commas at bracket depth 0."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def bracketed(s: str) -> tuple[str, str, list[str]] | None:
    """``(open, close, items)`` when ``s`` is a bracketed comma list; None otherwise."""
    for open_ in ("\\{", "(", "["):
        if s.startswith(open_):
            for close in ("\\}", ")", "]"):
                if s.endswith(close) and len(s) > len(open_) + len(close):
                    inner = s[len(open_) : len(s) - len(close)]
                    depth = 0
                    for c in inner:  # brackets must balance inside, e.g. not "(1)(2)"
                        depth += (c in "([{") - (c in ")]}")
                        if depth < 0:
                            return None
                    if depth != 0:
                        return None
                    return open_, close, split_top(inner)
    return None


_BASE_NUM_RE = re.compile(r"^([0-9A-Z]*\d[0-9A-Z]*)_\{?(\d+)\}?$")


def base_number(s: str) -> tuple[str, int] | None:
    """``("2516", 8)`` for a number written with a base subscript (``2516_8``, ``AB3_{16}``)."""
    m = _BASE_NUM_RE.match(s)
    if not m:
        return None
    digits = m.group(1).lstrip("0") or "0"
    return digits, int(m.group(2))


def is_word_answer(s: str) -> bool:
    """A word answer (letters/spaces only, at least 3 letters, no LaTeX)."""
    return bool(re.fullmatch(r"\(?[A-Za-z][A-Za-z ()'-]*", s)) and len(re.sub(r"[^A-Za-z]", "", s)) >= 3


def word_key(s: str) -> str:
    """Case- and punctuation-insensitive key of a word answer."""
    return re.sub(r"[^a-z]", "", s.lower())
