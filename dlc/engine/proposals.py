"""Proposals that are instructions: cleaning and rejection of the prompts B_π generates (beyond the paper).

A small proposer often answers with something that is not an instruction (bench/NOTES.md, issue 14): the template's
own words echoed back ("Your job is to write an improved instruction…"), a label in front ("Improved instruction:"),
quotes around it, an end marker in another spelling ("[End]", "</END>"), a copy of a training input, or a worked
solution of one example. Scoring such a candidate costs N·B·|labels| requests and, on 8 examples, can even win.

`clean_proposal` removes the wrapping; `rejection_reason` then refuses what is left when it is empty, longer than
`max_words`, or shares `copy_ngram` consecutive words with an input the proposer was shown. Rejected proposals are
recorded in the trace (reason and text) and are never scored.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

# "[END]", "[End]", "[ END ]", "</END>", "<end>", "(END)", "[/END]", "[END OF INSTRUCTION]", "[End of text]"
_END = re.compile(r"[\[<(]\s*/?\s*end(?:\s+of\s+[\w ]{1,20})?\s*[\]>)]|\[\s*end\b", re.IGNORECASE)
_END_LINE = re.compile(r"^\s*(?:end|end of instruction|the end)\s*\.?\s*$", re.IGNORECASE)
_LABEL = re.compile(
    r"^\s*(?:#+\s*|\*\*\s*|>\s*)*(?:here(?:'s| is)[^\n:]{0,60}:|"
    r"(?:the\s+)?(?:improved|new|revised|updated|rewritten|better|final|modified|clearer)?\s*"
    r"(?:instruction|prompt)s?\s*(?:\*\*)?\s*[:：\-–]\s*(?:\*\*)?)",
    re.IGNORECASE)
_QUOTES = (('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("`", "`"), ("```", "```"))
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def template_lines(template_text: str) -> list[str]:
    """The literal lines of a proposal template (Jinja tags and comments removed), normalised, 2+ words."""
    literal = _JINJA.sub("\n", template_text)
    return [n for n in (_norm(line) for line in literal.splitlines()) if len(n.split()) >= 2]


def _echoes(line: str, tlines: Sequence[str]) -> bool:
    """A line that repeats the template: equal to one of its lines, or 4+ words contained in one."""
    n = _norm(line)
    if not n:
        return False
    return any(n == t or (len(n.split()) >= 4 and n in t) for t in tlines)


def _unquote(t: str) -> str:
    changed = True
    while changed and t:
        changed = False
        for a, b in _QUOTES:
            if len(t) >= len(a) + len(b) and t.startswith(a) and t.endswith(b):
                t, changed = t[len(a):len(t) - len(b)].strip(), True
    return t


def clean_proposal(text: str, template_text: str = "") -> str:
    """The instruction inside a generated proposal: cut at the first end marker (any case or spelling), drop a
    leading "> " or label ("Improved instruction:", "Here is the new prompt:"), lines that repeat the proposal
    template, and surrounding quotes or code fences."""
    m = _END.search(text)
    t = text[:m.start()] if m else text
    tlines = template_lines(template_text) if template_text else []
    lines = []
    for line in t.splitlines():
        if _END_LINE.match(line):
            break
        if tlines and _echoes(line, tlines):
            continue
        lines.append(line)
    t = "\n".join(lines).strip()
    for _ in range(3):                   # "> **New instruction:** "…"": labels, quotes and markers nest
        before = t
        t = t.lstrip(">").strip()
        t = _LABEL.sub("", t, count=1).strip()
        t = _unquote(t)
        if t == before:
            break
    return t


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def rejection_reason(text: str, shown_inputs: Iterable[str], *, max_words: int = 150,
                     copy_ngram: int = 8) -> str | None:
    """Why a cleaned proposal must not be scored, or None: "empty", "too_long" (more than `max_words` words; 0 = no
    cap), or "copies_input" (shares `copy_ngram` consecutive words with an input the proposer saw; 0 = off)."""
    words = _norm(text).split()
    if not words:
        return "empty"
    if max_words > 0 and len(text.split()) > max_words:
        return "too_long"
    if copy_ngram > 0 and len(words) >= copy_ngram:
        mine = _ngrams(words, copy_ngram)
        for inp in shown_inputs:
            if mine & _ngrams(_norm(inp).split(), copy_ngram):
                return "copies_input"
    return None
