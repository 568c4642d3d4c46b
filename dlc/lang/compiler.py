"""`.dln` text -> checked `ir.Graph`: parse, apply `--set` overrides, check every block against its schema, resolve
templates and models, build the networkx DAG, and freeze the result in a deterministic topological order.

Pipeline (each stage pure; only `compile_file` reads the .dln and template files are read while resolving them):

    parse.parse(text)                      -> syntax.Program   (E2xx, first syntax error)
    overrides.apply_overrides(program, kv) -> syntax.Program   (E1xx: unknown override keys, did-you-mean)
    _Lowering(program).run()               -> ir.Graph         (E3xx/E35x/E4xx: *all* errors, then CompileFailed)

Writing a trained network back as `.fit.dln` (prompts and offsets spliced into the source) is `dlc.lang.rewrite`.
"""
from __future__ import annotations

import functools
import math
import importlib
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import networkx as nx

from dlc import ir
from dlc.lang import syntax as S
from dlc.lang import templates as T
from dlc.lang.check import (FORWARD_VARS, IMPLICIT_MODELS, INVALID, POSTERIOR_VARS, PROMPT_VARS, RESERVED, Checker,
                       GraphNode, backward_schema, data_schema, fit_schema, graph_checks, layer_schema,
                       model_schema, output_kind, output_schema, template_variables)
from dlc.errors import CompileFailed, DlcError, DlcGraphError, DlcUsageError, SourceSpan, did_you_mean
from dlc.lang.overrides import apply_overrides
from dlc.lang.parse import parse

DEFAULT_POSTERIOR = (("prior_answer", 0.5), ("prior", 0.5))   # the paper's best mixture of q_pri+ and q_pri (§3)
DEFAULT_PROMPT_TEMPLATE = "proposal"
# A choice output layer learns calibration offsets unless told not to (bench/LEARNING.md: the default model's main
# error is label bias; the offsets are kept only when they beat the raw layer on dev, see dlc/train/trainer.py).
DEFAULT_CALIBRATION = "fit"
DEFAULT_BACKWARD_STOP = ("[END]",)   # prompt_proposal.j2 asks the model to end the new instruction with [END]


# ====================================================================================================== public API
def compile_file(path: str | Path, overrides: Mapping[str, str] | None = None) -> ir.Graph:
    """Compile a .dln file. Relative template files and data paths resolve against the file's directory."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DlcUsageError(f"no such file: {path}", code="E104",
                            hint="check the path; example networks are in graphs/") from None
    except IsADirectoryError:
        raise DlcUsageError(f"{path} is a directory, not a .dln file", code="E104") from None
    except UnicodeDecodeError as e:
        raise DlcUsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", code="E105",
                            hint="save the file as UTF-8") from None
    except OSError as e:
        raise DlcUsageError(f"cannot read {path}: {e.strerror}", code="E104") from None
    return compile_source(text, str(path), overrides)


def compile_source(text: str, path: str = "<string>", overrides: Mapping[str, str] | None = None) -> ir.Graph:
    """Compile .dln source text; `path` names it in errors and anchors relative files."""
    program = parse(text, path)
    program, errors, sources = apply_overrides(program, overrides or {})
    return _Lowering(program, errors, sources).run()


# ====================================================================================================== templates
TEMPLATE_FILE_MAX = 1 << 20     # bytes: a template file over this is E357 (prompt templates are a few KiB)

@functools.lru_cache(maxsize=64)
def builtin_template(kind: str, name: str) -> ir.TemplateRef:
    path = T.builtin_path(kind, name)
    text = path.read_text(encoding="utf-8")
    return ir.TemplateRef(name=name, kind="builtin", text=text, sha256=T.sha256_text(text), path=str(path))


class _Resolved:
    """A resolved template and how to map its Jinja errors back to a file."""

    def __init__(self, ref: ir.TemplateRef, span: SourceSpan, line_offset: int = 0, col_offset: int = 0,
                 parse_path: str | None = None) -> None:
        self.ref, self.span = ref, span
        self.line_offset, self.col_offset, self.parse_path = line_offset, col_offset, parse_path


# ====================================================================================================== lowering
class _Lowering:
    def __init__(self, program: S.Program, errors: list[DlcError], sources: Mapping[str, str]) -> None:
        self.p = program
        self.ck = Checker(program.path, program.text)
        self.ck.sources.update(sources)
        self.ck.errors.extend(errors)
        self.base_dir = Path(program.path).resolve().parent if not program.path.startswith("<") else Path.cwd()
        self.task_labels: tuple[ir.Label, ...] | None = None
        self._output_spans: dict[str, SourceSpan] = {}

    # ------------------------------------------------------------------------------------------------ helpers
    def err(self, code: str, msg: str, span: SourceSpan | None, **kw: Any) -> Any:
        return self.ck.error(code, msg, span, **kw)

    def end_span(self) -> SourceSpan:
        lines = self.p.text.splitlines() or [""]
        return SourceSpan(self.p.path, len(lines), 1, len(lines), max(2, len(lines[-1]) + 1))

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> ir.Graph:
        name = self.network_name()
        inputs = self.inputs()
        models = self.models()
        data = self.data(inputs)
        layer_decls = self.layer_decls(inputs)
        output_decl = self.output_decl(inputs, layer_decls)

        nodes: dict[str, GraphNode] = {}
        for n in inputs.values():
            nodes[n.name] = GraphNode(n.name, "input", n.span)
        for d in layer_decls.values():
            known = tuple(p for p in d.parents if p.name in inputs or p.name in layer_decls)
            nodes[d.name.name] = GraphNode(d.name.name, "layer", d.span, known)
        out_name = output_decl.layer.name if output_decl is not None else None
        if out_name not in layer_decls:
            out_name = None
        # a layer cut off by an unknown parent is not also reported as unreachable (one typo, one error)
        dangling = any(p.name not in nodes for d in layer_decls.values() for p in d.parents)
        g = graph_checks(self.ck, nodes, out_name if not dangling else None)

        layers: dict[str, ir.Layer] = {}
        for d in layer_decls.values():
            lay = self.layer(d, is_output=d.name.name == out_name, models=models, g=g, inputs=inputs)
            if lay is not None:
                layers[lay.name] = lay

        if out_name in layers and self.task_labels and layers[out_name].output.kind == "choice":
            self.labels_match_task(layers[out_name], data.task or "")
        target, metric = self.output_settings(output_decl, layers.get(out_name) if out_name else None, data)
        data = replace(data, target_field=data.target_field if self._data_target else target)
        fit = self.fit(layer_decls)
        if self.ck.errors:
            raise CompileFailed(self.ck.errors)

        assert out_name is not None
        order = tuple(n for n in nx.lexicographical_topological_sort(g) if n in layers)
        used = {m for lay in layers.values() for m in (lay.model, lay.backward_model)}
        model_cfgs = {n: models[n] for n in sorted(models) if n in used or n in self._declared_models}
        return ir.Graph(name=name, inputs=tuple(inputs), layers={n: layers[n] for n in order}, order=order,
                        output=out_name, target=target, metric=metric, models=model_cfgs, data=data, fit=fit,
                        source_path=self.p.path, source_sha256=T.sha256_text(self.p.text))

    # ------------------------------------------------------------------------------------------------ network
    def network_name(self) -> str:
        decls = self.p.of_type(S.NetworkDecl)
        for d in decls[1:]:
            self.err("E303", "the network is named twice", d.span,
                     hint=f"keep one `network` line (first on line {decls[0].span.line})")
        if decls:
            return decls[0].name.name
        stem = Path(self.p.path).stem if not self.p.path.startswith("<") else "network"
        return re.sub(r"\W", "_", stem) or "network"

    def inputs(self) -> dict[str, S.Name]:
        out: dict[str, S.Name] = {}
        for d in self.p.of_type(S.InputDecl):
            for n in d.names:
                if n.name in out:
                    self.err("E303", f"input '{n.name}' is declared twice", n.span,
                             hint=f"first declared on line {out[n.name].span.line}")
                    continue
                if n.name in RESERVED:
                    self.err("E305", f"'{n.name}' is a reserved name (a template variable)", n.span,
                             hint=f"rename the input, e.g. '{n.name}_text'")
                out[n.name] = n
        return out

    def models(self) -> dict[str, ir.ModelConfig]:
        models = {n: ir.ModelConfig(name=n, backend="embedded", model=n) for n in IMPLICIT_MODELS}
        self._declared_models: set[str] = set()
        seen: dict[str, S.ModelDecl] = {}
        for d in self.p.of_type(S.ModelDecl):
            n = d.name.name
            if n in seen:
                self.err("E303", f"model '{n}' is declared twice", d.name.span,
                         hint=f"first declared on line {seen[n].name.span.line}")
                continue
            seen[n] = d
            vals, settings, _ = self.ck.settings(d.body, model_schema(self.ck), f"model {n}")
            vals = {k: v for k, v in vals.items() if v is not INVALID}
            base = models.get(n, ir.ModelConfig(name=n))
            cfg = replace(base, **vals)
            if cfg.backend == "openai" and "model" not in vals:
                self.err("E326", f"model '{n}': an openai backend needs `model` (the server's model name)",
                         d.name.span, hint='add e.g. model = "gpt-4o-mini"')
            if "delay" in vals and cfg.backend != "scripted":
                self.err("E312", f"model '{n}': `delay` is a setting of the scripted backend only, and this model's "
                         f"backend is {cfg.backend}", settings["delay"].key_span,
                         hint="remove `delay`, or set backend = scripted (the deterministic test LM)")
            models[n] = cfg
            self._declared_models.add(n)
        return models

    # ------------------------------------------------------------------------------------------------ data / fit
    def _config(self, kind: str) -> S.ConfigDecl | None:
        decls = [d for d in self.p.of_type(S.ConfigDecl) if d.kind == kind]
        for d in decls[1:]:
            self.err("E303", f"a second `{kind}` block", d.span,
                     hint=f"merge it into the first one (line {decls[0].span.line})")
        return decls[0] if decls else None

    def data(self, inputs: Mapping[str, S.Name]) -> ir.DataConfig:
        decl = self._config("data")
        self._data_target = False
        if decl is None:
            return ir.DataConfig()
        vals, settings, _ = self.ck.settings(decl.body, data_schema(self.ck), "data")
        out: dict[str, Any] = {}
        for k, v in vals.items():
            if v is INVALID:
                continue
            if k == "fields":
                out[k] = self.fields(v, inputs)
            elif k == "task":
                out[k] = self.task(v, settings[k].value)
            elif k in ("path", "data_dir") and not self.p.path.startswith("<"):
                out[k] = str((self.base_dir / v).resolve()) if not Path(v).is_absolute() else v
            else:
                out[k] = v
        self._data_target = "target_field" in out
        return replace(ir.DataConfig(), **{k: v for k, v in out.items() if v is not INVALID})

    def task(self, name: str, value: S.Value) -> Any:
        try:
            tasks = importlib.import_module("dlc.data.tasks").TASKS
        except (ImportError, AttributeError):   # the data package is optional for compiling
            return name
        if name not in tasks:
            return self.err("E314", f"unknown task '{name}'", value.span,
                            hint=did_you_mean(name, tasks) or f"built-in tasks: {', '.join(sorted(tasks))}; "
                            "or use data { path = \"my.jsonl\" }")
        self.task_labels = tuple(tasks[name].labels) or None
        return name

    def fields(self, v: S.Value, inputs: Mapping[str, S.Name]) -> Any:
        if not isinstance(v, S.MapV):
            return self.ck.type_error(v, "a map { input: \"dataset field\" }", "fields")
        out = []
        for e in v.entries:
            if e.key not in inputs:
                self.err("E302", f"fields maps '{e.key}', which is not an input of the network", e.key_span,
                         hint=did_you_mean(e.key, inputs) or f"inputs: {', '.join(inputs) or '(none)'}")
                continue
            f = self.ck.text(e.value, f"fields.{e.key}")
            if f is not INVALID:
                out.append((e.key, f))
        return tuple(out)

    def fit(self, layer_decls: Mapping[str, S.LayerDecl]) -> ir.FitConfig:
        decl = self._config("fit")
        if decl is None:
            return ir.FitConfig()
        vals, settings, _ = self.ck.settings(decl.body, fit_schema(self.ck), "fit")
        out = {}
        for k, v in vals.items():
            if v is INVALID:
                continue
            if k == "train":
                names = []
                for n, span in v:
                    if n not in layer_decls:
                        self.err("E302", f"fit.train names '{n}', which is not a layer", span,
                                 hint=did_you_mean(n, layer_decls) or f"layers: {', '.join(layer_decls)}")
                    else:
                        names.append(n)
                v = tuple(names)
            out[k] = v
        fit = replace(ir.FitConfig(), **out)
        if fit.n_shots > 0 and fit.iters > 0:
            # the demonstrations are an evaluation baseline: the trainer's forward passes, posteriors and prompt
            # scores never see them, so validating and testing with them would select prompts for another network
            where = "" if "iters" in settings else " (the default; `iters` is not set)"
            self.err("E330", f"n_shots = {fit.n_shots} with iters = {fit.iters}{where}: n-shot demonstrations are an "
                     "evaluation baseline, and training would validate with them but train without them",
                     settings["n_shots"].span, hint="set iters = 0 for the n-shot baseline, or n_shots = 0 to train "
                     "prompts")
        return fit

    # ------------------------------------------------------------------------------------------------ layers
    def layer_decls(self, inputs: Mapping[str, S.Name]) -> dict[str, S.LayerDecl]:
        out: dict[str, S.LayerDecl] = {}
        for d in self.p.of_type(S.LayerDecl):
            n = d.name.name
            if n in out or n in inputs:
                first = out[n].name.span if n in out else inputs[n].span
                what = "layer" if n in out else "input"
                self.err("E303", f"'{n}' is already declared (as {'a' if what == 'layer' else 'an'} {what} on "
                         f"line {first.line})", d.name.span, hint="node names must be unique")
                continue
            if n in RESERVED:
                self.err("E305", f"'{n}' is a reserved name (a template variable)", d.name.span,
                         hint=f"rename the layer, e.g. '{n}_layer'")
            out[n] = d
        names = set(inputs) | set(out)
        for d in out.values():
            if not d.parents:
                self.err("E324", f"layer '{d.name.name}' has no parents", d.span, node=d.name.name,
                         hint=f"name what it reads: `layer {d.name.name}(x)`")
            seen: set[str] = set()
            for p in d.parents:
                if p.name in seen:
                    self.err("E324", f"layer '{d.name.name}' lists parent '{p.name}' twice", p.span,
                             node=d.name.name, hint="list each parent once")
                seen.add(p.name)
                if p.name not in names:
                    hint = did_you_mean(p.name, names) or (f"declare it with `input {p.name}` or define "
                                                           f"`layer {p.name}(...)`")
                    self.err("E302", f"unknown node '{p.name}'", p.span, node=d.name.name, hint=hint)
        return out

    def output_decl(self, inputs: Mapping[str, S.Name], layers: Mapping[str, S.LayerDecl]) -> S.OutputDecl | None:
        decls = self.p.of_type(S.OutputDecl)
        if not decls:
            hint = (f"add `output {list(layers)[-1]}`" if layers else "declare a layer, then `output <layer>`")
            self.err("E403", "the network has no output", self.end_span(), hint=hint, cls=DlcGraphError)
            return None
        for d in decls[1:]:
            self.err("E405", "the network has more than one output", d.span, cls=DlcGraphError,
                     hint=f"keep one `output` (first on line {decls[0].span.line}); other layers feed into it")
        d = decls[0]
        n = d.layer.name
        if n in inputs:
            self.err("E404", f"the output '{n}' is an input, not a layer", d.layer.span, cls=DlcGraphError,
                     hint="the output must be a layer that produces the answer")
        elif n not in layers:
            self.err("E302", f"unknown node '{n}'", d.layer.span,
                     hint=did_you_mean(n, layers) or f"layers: {', '.join(layers) or '(none)'}")
        return d

    def output_settings(self, decl: S.OutputDecl | None, out_layer: ir.Layer | None,
                        data: ir.DataConfig) -> tuple[str, ir.Metric]:
        vals: dict[str, Any] = {}
        if decl is not None:
            vals, _, _ = self.ck.settings(decl.body, output_schema(self.ck), "output")
        kind = out_layer.output.kind if out_layer is not None else "choice"
        default_metric = {"choice": "accuracy", "number": "number_presence", "text": "exact_match"}[kind]
        metric = vals.get("metric", default_metric)
        if metric is INVALID:
            metric = default_metric
        target = vals.get("target")
        if target is None or target is INVALID:
            target = data.target_field if self._data_target else "label"
        return target, metric

    def layer(self, d: S.LayerDecl, *, is_output: bool, models: Mapping[str, ir.ModelConfig], g: nx.DiGraph,
              inputs: Mapping[str, S.Name]) -> ir.Layer | None:
        name = d.name.name
        n_errors = len(self.ck.errors)
        vals, settings, nested = self.ck.settings(d.body, layer_schema(self.ck), f"layer {name}",
                                                  nested=("backward",))
        parents = tuple(p.name for p in d.parents)

        out: Any = ir.Output(kind="text")
        if "output" in vals:
            out = output_kind(self.ck, vals["output"], name, self.task_labels)
            self._output_spans[name] = settings["output"].value.span
        elif is_output and self.task_labels:
            out = ir.Output(kind="choice", labels=self.task_labels)   # the data task's labels
        if out is INVALID:
            out = ir.Output()

        # forward template: explicit, or by shape (residual joins several parents; hidden text -> step by step)
        if "template" in vals:
            fwd = self.template(vals["template"], "forward", name, "template")
        else:
            default = "residual" if len(parents) > 1 else ("classify" if is_output or out.kind != "text"
                                                          else "step_by_step")
            fwd = _Resolved(builtin_template("forward", default), d.span)

        # backward
        bvals, bsettings, _ = self.ck.settings(nested["backward"].body if "backward" in nested else None,
                                               backward_schema(self.ck), f"layer {name} backward")
        if "prompt" in bvals:
            bprompt = self.template(bvals["prompt"], "prompt", name, "backward.prompt")
        else:
            bprompt = _Resolved(builtin_template("prompt", DEFAULT_PROMPT_TEMPLATE), d.span)
        posterior = self.posterior(bvals.get("posterior"), name, d.span)

        # models
        for key in ("model", "backward_model"):
            m = vals.get(key)
            if isinstance(m, str) and m not in models:
                self.err("E304", f"unknown model '{m}'", settings[key].value.span, node=name,
                         hint=did_you_mean(m, models) or f"models: {', '.join(sorted(models))}; "
                         "declare others with `model NAME { ... }`")

        # template variables (only when the parents are known, so one typo is not reported twice)
        if all(p in g for p in parents):
            fv = FORWARD_VARS | set(parents)
            for res, avail, role in ([(fwd, fv, "forward"), (bprompt, PROMPT_VARS, "prompt-proposal")]
                                     + [(r, fv | POSTERIOR_VARS, "posterior") for r, _ in posterior]):
                if res is not None and res is not INVALID:
                    template_variables(self.ck, res.ref, avail, name, res.span, role,
                                       line_offset=res.line_offset, col_offset=res.col_offset,
                                       parse_path=res.parse_path)

        offsets = self.offsets(vals, settings, out, name)
        if "calibration" in vals and vals["calibration"] == "fit" and out.kind != "choice":
            self.err("E329", f"calibration = fit needs a choice output, and layer '{name}' outputs {out.kind}",
                     settings["calibration"].value.span, node=name,
                     hint="remove the calibration setting, or give the layer `output = choice { ... }`")

        if len(self.ck.errors) > n_errors or fwd is INVALID or bprompt is INVALID:
            return None
        gen = ir.Generation(
            max_tokens=int(vals.get("max_tokens", ir.Generation.max_tokens)),
            temperature=float(vals.get("temperature", ir.Generation.temperature)),
            top_p=float(vals.get("top_p", ir.Generation.top_p)),
            stop=tuple(vals.get("stop", ())))
        backward = ir.Backward(prompt_template=bprompt.ref,
                               posterior=tuple(ir.PosteriorComponent(r.ref, w) for r, w in posterior),
                               max_tokens=int(bvals.get("max_tokens", ir.Backward.max_tokens)),
                               stop=tuple(bvals.get("stop", DEFAULT_BACKWARD_STOP)))
        return ir.Layer(name=name, parents=parents, template=fwd.ref, prompt=vals.get("prompt", ""),
                        trainable=not vals.get("fixed", False), output=out, generation=gen, backward=backward,
                        model=vals.get("model", "default"), backward_model=vals.get("backward_model", "default"),
                        format=vals.get("format", "chat"), system=vals.get("system"),
                        answer_prefix=vals.get("answer_prefix", ""),
                        calibration=vals.get("calibration", DEFAULT_CALIBRATION if is_output and out.kind == "choice"
                                             else "none"),
                        offsets=offsets, span=d.span.to_json())

    def offsets(self, vals: Mapping[str, Any], settings: Mapping[str, Any], out: Any, layer: str
                ) -> tuple[tuple[str, float], ...]:
        """`offsets = { label: number, ... }`: a calibrated choice layer's learned per-label log-offsets (written
        by `dlc fit` into `<net>.fit.dln`). Every key must be a label of the layer and every value finite."""
        v = vals.get("offsets")
        if v is None:
            return ()
        if not isinstance(v, S.MapV):
            self.ck.type_error(v, "a map { label: number }", "offsets")
            return ()
        if out.kind != "choice":
            self.err("E329", f"offsets need a choice output, and layer '{layer}' outputs {out.kind}",
                     settings["offsets"].value.span, node=layer, hint="remove the offsets setting")
            return ()
        names = list(out.label_names)
        got: list[tuple[str, float]] = []
        for e in v.entries:
            if e.key not in names:
                self.err("E328", f"offsets name '{e.key}', which is not a label of layer '{layer}'", e.key_span,
                         node=layer, hint=did_you_mean(e.key, names) or f"labels: {', '.join(names)}")
                continue
            x = self.ck.number(e.value, f"offsets.{e.key}", None, None)
            if x is INVALID:
                continue
            if not math.isfinite(float(x)):
                self.err("E311", f"offsets.{e.key} must be a finite number", e.value.span, node=layer,
                         hint="offsets are log-probability shifts, typically between -3 and 3")
                continue
            got.append((e.key, float(x)))
        order = {n: i for i, n in enumerate(names)}
        return tuple(sorted(got, key=lambda kv: order[kv[0]]))

    def labels_match_task(self, lay: ir.Layer, task: str) -> None:
        """The output labels must be the task's canonical label names, or no target would ever match."""
        assert self.task_labels is not None
        want = [lb.name for lb in self.task_labels]
        got = list(lay.output.label_names)
        if set(want) == set(got):
            return
        missing = [n for n in want if n not in got]
        extra = [n for n in got if n not in want]
        detail = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                       f"unknown {', '.join(extra)}" if extra else "") if x)
        self.err("E327", f"the labels of '{lay.name}' do not match task '{task}' ({detail})",
                 self._output_spans.get(lay.name, SourceSpan(self.p.path, 1, 1)), node=lay.name,
                 hint=f"the task's labels are {', '.join(want)} (verbalizers may differ)")

    def posterior(self, v: S.Value | None, layer: str, span: SourceSpan) -> list[tuple[_Resolved, float]]:
        """`posterior = { prior_answer: 0.5, prior: 0.5 }` (weights normalised to sum 1), a name, or a list."""
        if v is None:
            return [(_Resolved(builtin_template("posterior", n), span), w) for n, w in DEFAULT_POSTERIOR]
        entries: list[tuple[str, SourceSpan, S.Value | None, bool]] = []
        if isinstance(v, S.MapV):
            entries = [(e.key, e.key_span, e.value, False) for e in v.entries]
        elif isinstance(v, S.Ident):
            entries = [(v.name, v.span, None, False)]
        elif isinstance(v, S.ListV) and all(isinstance(i, S.Ident) for i in v.items):
            entries = [(i.name, i.span, None, False) for i in v.items]   # type: ignore[union-attr]
        else:
            self.ck.type_error(v, "a map { template: weight } (or a template name)", "posterior")
            return []
        out: list[tuple[_Resolved, float]] = []
        seen: set[str] = set()
        for key, kspan, wv, _ in entries:
            if key in seen:
                self.err("E303", f"posterior template '{key}' is listed twice", kspan, node=layer)
                continue
            seen.add(key)
            weight = 1.0
            if wv is not None:
                w = self.ck.number(wv, f"posterior.{key}", 0.0)
                if w is INVALID:
                    continue
                weight = w
            if key.endswith(".j2"):
                res = self.template_file(S.Str(key, kspan), "posterior", layer)
            elif key in T.builtin_names("posterior"):
                res = _Resolved(builtin_template("posterior", key), kspan)
            else:
                self.err("E301", f"unknown posterior template '{key}'", kspan, node=layer,
                         hint=did_you_mean(key, T.builtin_names("posterior"))
                         or f"built-in posteriors: {', '.join(T.builtin_names('posterior'))}; or a \"file.j2\"")
                continue
            if res is not INVALID:
                out.append((res, weight))
        total = sum(w for _, w in out)
        if out and total <= 0:
            self.err("E323", "posterior mixture weights sum to 0", v.span, node=layer,
                     hint="give at least one template a positive weight")
            return []
        if not entries:
            self.err("E323", "the posterior mixture is empty", v.span, node=layer,
                     hint="e.g. posterior = { prior_answer: 0.5, prior: 0.5 }")
        return [(r, w / total) for r, w in out] if total > 0 else out

    def template(self, v: S.Value, kind: str, layer: str, key: str) -> Any:
        """A template reference: a built-in name, `file "path"`, or an inline string."""
        if isinstance(v, S.Ident):
            names = T.builtin_names(kind)
            if v.name not in names:
                return self.err("E301", f"unknown {'' if kind == 'forward' else kind + ' '}template '{v.name}'",
                                v.span, node=layer, hint=did_you_mean(v.name, names)
                                or f"built-in: {', '.join(names)}; or file \"my.j2\", or \"\"\"inline\"\"\"")
            return _Resolved(builtin_template(kind, v.name), v.span)
        if isinstance(v, S.FileRef):
            return self.template_file(v.path, kind, layer)
        if isinstance(v, S.Str):
            ref = ir.TemplateRef(name=f"<inline:{layer}.{key}>", kind="inline", text=v.value,
                                 sha256=T.sha256_text(v.value))
            return _Resolved(ref, v.span, line_offset=(v.content_line or v.span.line) - 1,
                             col_offset=(v.content_col or v.span.col) - 1, parse_path=self.p.path)
        return self.ck.type_error(v, 'a template name, file "path.j2" or an inline """string"""', key)

    def template_file(self, s: S.Str, kind: str, layer: str) -> Any:
        """Read `file "path"`: a regular file of at most TEMPLATE_FILE_MAX bytes whose real path (symlinks and `..`
        resolved) is inside the .dln's directory tree or a directory listed in $DLC_TEMPLATE_DIRS (E356, E357).
        Opened without blocking and checked again once open, so a FIFO or a device never hangs or floods compile."""
        p = Path(s.value)
        full = p if p.is_absolute() else self.base_dir / p
        looked = f"looked for {full}; paths are relative to the .dln file"
        try:
            real = full.resolve(strict=True)
        except (OSError, RuntimeError):      # missing, a dangling symlink, a symlink loop, a bad name
            return self.err("E355", f"template file '{s.value}' not found", s.span, node=layer, hint=looked)
        roots = [self.base_dir.resolve()] + [Path(d).expanduser().resolve()
                                             for d in os.environ.get("DLC_TEMPLATE_DIRS", "").split(os.pathsep) if d]
        if not any(real.is_relative_to(r) for r in roots):
            return self.err("E356", f"template file '{s.value}' is outside the network's directory (it is {real})",
                            s.span, node=layer,
                            hint="keep template files in the .dln's directory or below it, or list their directory "
                                 "in $DLC_TEMPLATE_DIRS (separated by ':')")
        fd = -1
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return self.err("E357", f"template file '{s.value}' is not a regular file", s.span, node=layer,
                                hint="a template must be an ordinary text file (not a directory, device or FIFO)")
            data = b""
            while st.st_size <= TEMPLATE_FILE_MAX and len(data) <= TEMPLATE_FILE_MAX:   # (it may grow meanwhile)
                more = os.read(fd, TEMPLATE_FILE_MAX + 1 - len(data))
                if not more:
                    break
                data += more
            if st.st_size > TEMPLATE_FILE_MAX or len(data) > TEMPLATE_FILE_MAX:
                return self.err("E357", f"template file '{s.value}' is larger than {TEMPLATE_FILE_MAX // 1024} KiB",
                                s.span, node=layer, hint="a prompt template is text of a few KiB")
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = "not found" if isinstance(e, FileNotFoundError) else "unreadable"
            return self.err("E355", f"template file '{s.value}' {why}", s.span, node=layer, hint=looked)
        finally:
            if fd >= 0:
                os.close(fd)
        ref = ir.TemplateRef(name=s.value, kind="file", text=text, sha256=T.sha256_text(text), path=str(full))
        return _Resolved(ref, s.span, parse_path=str(full))


__all__ = ["compile_file", "compile_source", "builtin_template"]
