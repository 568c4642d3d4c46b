"""Building blocks of the HTML report: escaping, tables, a word diff, number formats and the page shell.

The page is one self-contained file: the style sheet is inline, charts and the network are inline SVG, and there is
no script. A Content-Security-Policy meta tag (`default-src 'none'`) tells the browser to load nothing and run
nothing, so even a page opened from an untrusted run cannot reach the network. Every text that comes from a run
(prompts, dataset examples, model outputs, file names) is escaped by `esc`; helpers here escape what they are given
unless it is marked as markup with `Raw`.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from dlc import __version__
from dlc.report.svg import esc

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #0f172a;
       background: #f1f5f9; margin: 0; }
header.top { background: #0f172a; color: #f8fafc; padding: 18px 28px 14px; }
header.top h1 { margin: 0 0 4px; font-size: 22px; }
header.top .meta { color: #cbd5e1; font-size: 13px; }
nav { background: #1e293b; padding: 6px 28px; position: sticky; top: 0; z-index: 2; }
nav a { color: #e2e8f0; margin-right: 16px; text-decoration: none; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 40px; }
section { background: #ffffff; border: 1px solid #e2e8f0; border-radius: 10px; margin: 16px 0; padding: 6px 20px 16px; }
h2 { font-size: 18px; margin: 12px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 10px 0 4px; }
.card { background: #f8fafc; border: 1px solid #e2e8f0; border-radius: 8px; padding: 8px 14px; min-width: 130px; }
.card .k { color: #475569; font-size: 12px; } .card .v { font-size: 20px; font-weight: 600; }
.up { color: #15803d; } .down { color: #b91c1c; } .muted, .sub { color: #64748b; }
svg text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: #0f172a; }
svg text.sub, svg text.tick { fill: #475569; font-size: 11px; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #e2e8f0; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f8fafc; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.chosen td { background: #ecfdf5; }
.txt { white-space: pre-wrap; word-break: break-word; max-height: 14em; overflow: auto; max-width: 640px;
       font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
.prompt { white-space: pre-wrap; word-break: break-word; background: #f8fafc; border: 1px solid #e2e8f0;
          border-radius: 6px; padding: 8px 10px; font: 13px/1.5 ui-monospace, "DejaVu Sans Mono", monospace; }
del { background: #fee2e2; color: #991b1b; } ins { background: #dcfce7; color: #166534; text-decoration: none; }
.badge { display: inline-block; border-radius: 9px; padding: 0 8px; font-size: 12px; background: #e2e8f0; }
.badge.ok { background: #dcfce7; color: #166534; } .badge.no { background: #fee2e2; color: #991b1b; }
.badge.info { background: #dbeafe; color: #1e40af; }
.bar { display: inline-block; height: 9px; background: #2563eb; border-radius: 2px; vertical-align: middle; }
details > summary { cursor: pointer; font-weight: 600; margin: 6px 0; }
.grid2 { display: flex; flex-wrap: wrap; gap: 24px; }
footer { color: #64748b; font-size: 12px; text-align: center; padding: 10px; }
"""


@dataclass(frozen=True)
class Raw:
    """Markup built by this package (already escaped): passed through by `cell`/`table` as it is."""

    html: str

    def __str__(self) -> str:
        return self.html


def cell(value: Any) -> str:
    """A value as escaped cell content: Raw as is, None as a dash, a float to 4 significant digits."""
    if isinstance(value, Raw):
        return value.html
    if value is None:
        return '<span class="muted">–</span>'
    if isinstance(value, float):
        return esc(fnum(value))
    return esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = (),
          row_classes: Sequence[str] | None = None, cls: str = "") -> str:
    """An HTML table; columns listed in `numeric` are right-aligned."""
    out = [f'<table{f" class={chr(34)}{esc(cls)}{chr(34)}" if cls else ""}><thead><tr>'
           + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes and i < len(row_classes) and row_classes[i] else ""
        out.append((f'<tr class="{esc(rc)}">' if rc else "<tr>")
                   + "".join(('<td class="n">' if j in numeric else "<td>") + cell(v) + "</td>"
                             for j, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def text_block(text: str, cls: str = "txt") -> str:
    """Untrusted text, escaped, whitespace kept."""
    return f'<div class="{esc(cls)}">{esc(text)}</div>'


def badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def section(sid: str, title: str, body: str, *, intro: str = "") -> str:
    """A report section with a stable id (the navigation links to it; tests look for it)."""
    p = f'<p class="muted">{esc(intro)}</p>' if intro else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{p}{body}</section>'


def note(text: str) -> str:
    return f'<p class="muted">{esc(text)}</p>'


# ------------------------------------------------------------------------------------------------ word diff

_WORD = re.compile(r"\S+\s*|\s+")


def word_diff(before: str, after: str) -> str:
    """`after` as escaped HTML with the words removed from `before` in <del> and the words added in <ins>
    (difflib over whitespace-separated words; the whitespace after a word travels with it)."""
    a, b = _WORD.findall(before or ""), _WORD.findall(after or "")
    sm = difflib.SequenceMatcher(None, [w.strip() for w in a], [w.strip() for w in b], autojunk=False)
    out = []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            out.append(esc("".join(b[j1:j2])))
            continue
        if i2 > i1:
            out.append(f"<del>{esc(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{esc(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ numbers

def fnum(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:,.0f}"


def facc(x: float | None) -> str:
    """An accuracy as 0.750 (a dash when not measured)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def fint(x: Any) -> str:
    return f"{int(x):,}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"


def fseconds(s: Any) -> str:
    """Wall time as 0.05 s / 42.1 s / 8 min 50 s / 2 h 05 min."""
    if not isinstance(s, (int, float)) or isinstance(s, bool):
        return "–"
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def setting(value: Any) -> str:
    """A resolved setting as text (strings as they are, everything else as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def delta(before: float | None, after: float | None) -> str:
    """before -> after, coloured by the sign of the change (escaped markup)."""
    if before is None or after is None:
        return f"{esc(facc(before))} → {esc(facc(after))}"
    cls = "up" if after > before else "down" if after < before else "muted"
    return f'{esc(facc(before))} → <span class="{cls}">{esc(facc(after))}</span>'


# ------------------------------------------------------------------------------------------------ the page

def page(title: str, subtitle_html: str, nav: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    """The whole document: head (charset, CSP, inline style), header, section navigation, sections, footer."""
    links = "".join(f'<a href="#{esc(sid)}">{esc(label)}</a>' for sid, label in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="dlc {esc(__version__)}">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>"
            f'<header class="top"><h1>{esc(title)}</h1><div class="meta">{subtitle_html}</div></header>'
            f"<nav>{links}</nav><main>\n" + "\n".join(body) + "\n</main>"
            f"<footer>written by dlc {esc(__version__)} · a static page: no script, nothing loaded from the network"
            "</footer></body></html>\n")


__all__ = ["CSP", "Raw", "badge", "cell", "delta", "facc", "fint", "fnum", "fseconds", "note", "page", "section",
           "setting", "table", "text_block", "word_diff"]
