"""Views of a compiled graph: a readable text summary, Graphviz DOT, Mermaid, and (when `dot` is installed) SVG/PNG.

Pure functions of `ir.Graph` except `render_image`, which runs Graphviz.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

from dlc import ir
from dlc.errors import DlcUsageError


def _short(text: str, n: int = 70) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 3] + "..."


def _output_desc(out: ir.Output) -> str:
    if out.kind != "choice":
        return out.kind
    return "choice {" + ", ".join(f"{lb.name}: {' | '.join(repr(v) for v in lb.verbalizers)}"
                                  for lb in out.labels) + "}"


def _non_default(obj: object) -> dict[str, object]:
    default = type(obj)()
    return {f.name: getattr(obj, f.name) for f in fields(obj)  # type: ignore[arg-type]
            if getattr(obj, f.name) != getattr(default, f.name)}


def _setting_text(value: object) -> str:
    """A setting as the .dln would write it (`fields = { x: "text" }`, `train = [h, y]`), never a Python repr."""
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value) and value:
        return "{" + ", ".join(f"{k}: {json.dumps(v) if isinstance(v, str) else v}" for k, v in value) + "}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def to_text(graph: ir.Graph) -> str:
    """Nodes, parents, templates, trainable prompts and the output, in topological order."""
    lines = [f"network {graph.name}" + (f"  ({graph.source_path})" if graph.source_path else "")]
    lines.append(f"inputs: {', '.join(graph.inputs)}")
    lines.append("layers (in execution order):")
    for name in graph.order:
        lay = graph.layers[name]
        mark = "  <- output" if name == graph.output else ""
        lines.append(f"  {name}({', '.join(lay.parents)}){mark}")
        lines.append(f"      template  {lay.template.name} ({lay.template.kind})   format {lay.format}"
                     + (f"   answer_prefix {lay.answer_prefix!r}" if lay.answer_prefix else ""))
        lines.append(f"      output    {_output_desc(lay.output)}")
        models = lay.model if lay.model == lay.backward_model else f"{lay.model} (backward: {lay.backward_model})"
        lines.append(f"      model     {models}")
        status = "trainable" if lay.trainable else "fixed"
        lines.append(f"      prompt    [{status}] {json.dumps(_short(lay.prompt)) if lay.prompt else '(empty)'}")
        post = ", ".join(f"{c.template.name} {c.weight:g}" for c in lay.backward.posterior)
        lines.append(f"      backward  prompt {lay.backward.prompt_template.name}; posterior {post}")
    trainable = [n for n in graph.order if graph.layers[n].trainable]
    lines.append(f"output: {graph.output}   target field: {graph.target}   metric: {graph.metric}")
    lines.append(f"trainable prompts: {len(trainable)} ({', '.join(trainable) or 'none'})")
    for name, cfg in graph.models.items():
        extra = f" base_url_env={cfg.base_url_env}" if cfg.base_url_env else ""
        lines.append(f"model {name}: {cfg.backend} {cfg.model}{extra}")
    data = _non_default(graph.data)
    if data:
        lines.append("data: " + "  ".join(f"{k}={_setting_text(v)}" for k, v in data.items()))
    fit = _non_default(graph.fit)
    lines.append("fit: " + ("  ".join(f"{k}={_setting_text(v)}" for k, v in fit.items()) if fit
                            else "(defaults)"))
    return "\n".join(lines)


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph: ir.Graph) -> str:
    out = [f'digraph "{_dot_escape(graph.name)}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for n in graph.inputs:
        out.append(f'  "{_dot_escape(n)}" [shape=ellipse, label="{_dot_escape(n)}\\n(input)"];')
    for name in graph.order:
        lay = graph.layers[name]
        label = f"{name}\\n{_dot_escape(lay.template.name)} · {lay.output.kind}"
        if lay.trainable:
            label += "\\n[trainable]"
        peri = ", peripheries=2" if name == graph.output else ""
        out.append(f'  "{_dot_escape(name)}" [shape=box, style=rounded, label="{label}"{peri}];')
    for name in graph.order:
        for p in graph.layers[name].parents:
            out.append(f'  "{_dot_escape(p)}" -> "{_dot_escape(name)}";')
    out.append("}")
    return "\n".join(out) + "\n"


def _mid(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(graph: ir.Graph) -> str:
    out = ["flowchart LR"]
    for n in graph.inputs:
        out.append(f'  {_mid(n)}(["{n} (input)"])')
    for name in graph.order:
        lay = graph.layers[name]
        label = f"{name}<br/>{lay.template.name} · {lay.output.kind}" + ("<br/>trainable" if lay.trainable else "")
        out.append(f'  {_mid(name)}[["{label}"]]' if name == graph.output else f'  {_mid(name)}["{label}"]')
    for name in graph.order:
        for p in graph.layers[name].parents:
            out.append(f"  {_mid(p)} --> {_mid(name)}")
    return "\n".join(out) + "\n"


def to_json_summary(graph: ir.Graph) -> str:
    """The full manifest document (what `dlc compile` writes)."""
    from dlc.artifacts.manifest import to_json
    return json.dumps(to_json(graph), indent=2, ensure_ascii=False) + "\n"


def render_image(graph: ir.Graph, fmt: str, out: str | Path) -> Path:
    """Run Graphviz `dot -T<fmt>`; a missing Graphviz is a user-facing E106 with the alternative."""
    exe = shutil.which("dot")
    if exe is None:
        raise DlcUsageError(f"--format {fmt} needs Graphviz `dot`, which is not installed", code="E106",
                            hint="install graphviz, or use --format dot / mermaid and render it elsewhere")
    out = Path(out)
    try:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=to_dot(graph).encode("utf-8"),
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DlcUsageError(f"Graphviz failed: {e}", code="E106") from None
    if proc.returncode != 0:
        raise DlcUsageError(f"Graphviz failed: {proc.stderr.decode(errors='replace').strip()}", code="E106")
    return out


__all__ = ["to_text", "to_dot", "to_mermaid", "to_json_summary", "render_image"]
