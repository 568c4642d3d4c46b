"""Write a trained network back as source: the `.fit.dln` next to a run is the original `.dln` text with each
trained layer's prompt (and, for calibrated layers, its offsets) spliced in, comments and layout kept."""
from __future__ import annotations

from typing import Mapping

from dlc.errors import DlcUsageError, did_you_mean
from dlc.lang import syntax as S
from dlc.lang.parse import encode_block_string, encode_long_string, parse


def rewrite_prompts(source_text: str, path: str, prompts: Mapping[str, str],
                    offsets: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """The same .dln text with each named layer's prompt replaced by a triple-quoted literal (added when the layer
    had none) and, for calibrated layers, its `offsets = { label: b, ... }` set (replaced or added). Comments and
    layout elsewhere are kept; used to write `<net>.fit.dln` after training."""
    program = parse(source_text, path)
    layers = {d.name.name: d for d in program.of_type(S.LayerDecl)}
    unknown = [n for n in list(prompts) + list(offsets or {}) if n not in layers]
    if unknown:
        raise DlcUsageError(f"no layer named '{unknown[0]}' in {path}", code="E102",
                            hint=did_you_mean(unknown[0], layers))
    lines = source_text.splitlines(keepends=True)
    line_start = [0]
    for ln in lines:
        line_start.append(line_start[-1] + len(ln))

    def off(line: int, col: int) -> int:
        return line_start[line - 1] + col - 1

    def indent_of(line: int) -> str:
        ln = lines[line - 1] if line - 1 < len(lines) else ""
        return ln[: len(ln) - len(ln.lstrip(" \t"))]

    settings: dict[str, list[tuple[str, str]]] = {}
    for name, new in prompts.items():
        settings.setdefault(name, []).append(("prompt", new))
    for name, offs in (offsets or {}).items():
        literal = "{ " + ", ".join(f"{k}: {float(v):.6g}" for k, v in offs.items()) + " }"
        settings.setdefault(name, []).append(("offsets", literal))

    edits: list[tuple[int, int, str]] = []
    for name, items in settings.items():
        decl = layers[name]
        inserts = []
        for key, new in items:
            literal = encode_long_string(new) if key == "prompt" else new
            setting = None
            if decl.body is not None:
                setting = next((s for s in decl.body.items if isinstance(s, S.Setting) and s.key == key), None)
            if setting is not None:
                v = setting.value.span
                key_indent = indent_of(setting.key_span.line)
                if key == "prompt" and setting.key_span.col == len(key_indent) + 1:   # block style reads best
                    literal = encode_block_string(new, key_indent) or literal
                edits.append((off(v.line, v.col), off(v.end_line or v.line, v.end_col or v.col), literal))
            else:
                inserts.append(f"{key} = {literal}")
        if not inserts:
            continue
        first = next((s for s in decl.body.items if isinstance(s, S.Setting)), None) if decl.body else None
        if first is not None and first.key_span.line > decl.body.span.line:   # type: ignore[union-attr]
            # a multi-line body: new settings go on their own lines, indented like the first setting
            ind = indent_of(first.key_span.line)
            start = off(first.key_span.line, 1)
            edits.append((start, start, "".join(f"{ind}{s}\n" for s in inserts)))
        elif decl.body is not None:
            b = decl.body.span              # insert right after the opening brace
            start = off(b.line, b.col) + 1
            edits.append((start, start, "".join(f" {s}\n " for s in inserts)))
        else:
            end = off(decl.span.end_line or decl.span.line, decl.span.end_col or decl.span.col)
            # the header ends at the layer name; skip the "(...)" parent list
            close = source_text.index(")", end) + 1
            edits.append((close, close, " { " + "  ".join(inserts) + " }"))
    out = source_text
    for start, end, rep in sorted(edits, reverse=True):
        out = out[:start] + rep + out[end:]
    return out


__all__ = ["rewrite_prompts"]
