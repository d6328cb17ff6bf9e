"""Token heat maps: every response of a group, tokens coloured by THR on a diverging scale.

Blue is THR > 0 (a step on the token raises the likelihood of the correct responses:
exploitation), red is THR < 0 (it lowers it: exploration), white is 0. The scale of a group is
the 95th percentile of its ``|THR|`` (tokens beyond it get the full colour), so one outlier does
not wash out the rest. Dominant tokens (``|s| > tau``) are underlined. Hovering a token shows
THR, influence, entropy, probability and, when logged, the self-term and the token advantage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thr.analysis.page import esc, page
from thr.analysis.stats import group_tau, is_mixed

POS_RGB = (33, 102, 172)
NEG_RGB = (178, 24, 43)


def color_scale(group: dict[str, Any], quantile: float = 0.95) -> float:
    """``|THR|`` that gets the full colour in this group (1.0 when every THR is zero)."""
    vals = np.abs(np.asarray([v for r in group["responses"] for v in r["thr"]], dtype=np.float64))
    vals = vals[vals > 0]
    return float(np.quantile(vals, quantile)) if vals.size else 1.0


def token_color(thr: float, scale: float) -> tuple[int, int, int]:
    """White blended towards blue (THR > 0) or red (THR < 0) by ``min(1, |THR| / scale)``."""
    t = min(1.0, abs(thr) / scale) if scale > 0 else 0.0
    end = POS_RGB if thr > 0 else NEG_RGB
    return tuple(round(255 + (c - 255) * t) for c in end)  # type: ignore[return-value]


def _token_text(tok: str) -> str:
    return esc(tok.replace("\n", "\u21b5\n")) if tok else "\u2205"


def _num(v: Any) -> str:
    return f"{float(v):.6g}"


def token_span(resp: dict[str, Any], k: int, scale: float, tau: float) -> str:
    thr = float(resp["thr"][k])
    r, g, b = token_color(thr, scale)
    dominant = abs(float(resp["influence"][k])) > tau
    fg = "#fff" if min(1.0, abs(thr) / scale) > 0.65 else "#1b1f24"
    attrs = (f'data-thr="{_num(thr)}" data-s="{_num(resp["influence"][k])}" '
             f'data-h="{_num(resp["entropy"][k])}" data-p="{_num(resp["prob"][k])}"')
    for key, attr in (("self", "data-self"), ("token_advantage", "data-adv")):
        if key in resp and k < len(resp[key]):
            attrs += f' {attr}="{_num(resp[key][k])}"'
    cls = "tok dom" if dominant else "tok"
    return f'<span class="{cls}" style="background:rgb({r},{g},{b});color:{fg}" {attrs}>{_token_text(resp["tokens"][k])}</span>'


def response_html(resp: dict[str, Any], scale: float, tau: float) -> str:
    ok = bool(resp["correct"])
    badge = '<span class="badge ok">\u2713 correct</span>' if ok else '<span class="badge bad">\u2717 incorrect</span>'
    thr = [float(v) for v in resp["thr"]]
    n_dom = sum(abs(float(s)) > tau for s in resp["influence"])
    meta = (f'{badge} reward {float(resp.get("reward", 0)):g} \u00b7 advantage {float(resp.get("advantage", 0)):+.3f} '
            f'\u00b7 {len(thr)} tokens \u00b7 \u03a3THR {sum(thr):+.4g} \u00b7 {n_dom} dominant')
    spans = "".join(token_span(resp, k, scale, tau) for k in range(len(resp["tokens"])))
    cls = "correct" if ok else "incorrect"
    return f'<div class="resp {cls}"><div class="meta">{meta}</div><div class="toks">{spans}</div></div>'


def group_html(group: dict[str, Any]) -> str:
    """One group: its problem and every response."""
    scale = color_scale(group)
    tau = group_tau(group)
    head = f'group {esc(group.get("group", "?"))}'
    if "step" in group:
        head = f'step {esc(group["step"])} \u00b7 ' + head
    tau_txt = "none (no correct response)" if tau == float("inf") else f"{tau:.4g}"
    info = (f'<div class="q"><b>{head}</b> \u00b7 answer <code>{esc(group.get("answer", ""))}</code> '
            f'\u00b7 colour scale \u00b1{scale:.3g} \u00b7 tau {tau_txt}</div>'
            f'<div class="muted q">{esc(group.get("problem", ""))}</div>')
    body = "".join(response_html(r, scale, tau) for r in group["responses"])
    return f'<section class="group">{info}{body}</section>'


LEGEND = ('<p class="muted">THR <b>\u2212</b> <span class="scale"></span> <b>+</b> \u00b7 red: THR &lt; 0 '
          '(exploration) \u00b7 blue: THR &gt; 0 (exploitation) \u00b7 underlined: dominant tokens (|s| &gt; tau) '
          '\u00b7 hover a token for its numbers</p>')


def groups_html(groups: list[dict[str, Any]]) -> str:
    return LEGEND + "".join(group_html(g) for g in groups)


def pick_groups(groups: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` groups, mixed-reward groups first (in their original order)."""
    mixed = [g for g in groups if is_mixed(g)]
    rest = [g for g in groups if not is_mixed(g)]
    return (mixed + rest)[: max(n, 0)]


def heatmap_page(groups: list[dict[str, Any]], title: str = "THR heat map") -> str:
    """A standalone HTML page of the given groups."""
    body = f"<h1>{esc(title)}</h1>" + groups_html(groups)
    return page(title, body, data={"charts": []})
