"""`.dln` text -> checked `ir.Graph`: parse, apply `--set` overrides, check every block against its schema, resolve
templates and models, build the networkx DAG, and freeze the result in a deterministic topological order.

Pipeline (each stage pure; only `compile_file` reads the .dln and template files are read while resolving them):

    parse.parse(text)                      -> syntax.Program   (E2xx; with them, recovery.py's semantic errors)
    overrides.apply_overrides(program, kv) -> syntax.Program   (E1xx: unknown override keys, did-you-mean)
    _Lowering(program).run()               -> ir.Graph         (E3xx/E35x/E4xx: *all* errors, then CompileFailed)

A block's keys, types, ranges and defaults are the `ir.setting` fields (`dlc.lang.schema`): the simple keys are
checked by `check.schema` and copied by `schema.fill`; this module resolves the keys that need context (templates
through `dlc.lang.resolve`, labels, model and layer names, data paths, offsets, context-dependent defaults).

Writing a trained network back as `.fit.dln` (prompts and offsets spliced into the source) is `dlc.lang.rewrite`.
"""
from __future__ import annotations

import importlib
import math
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
                            GraphNode, graph_checks, output_kind, schema, template_variables)
from dlc.lang.resolve import DEFAULT_PROMPT_TEMPLATE, TEMPLATE_FILE_MAX, Resolved, TemplateResolver, builtin_template
from dlc.lang.schema import fill
from dlc.errors import (CompileFailed, DlcError, DlcGraphError, DlcSyntaxError, DlcUsageError, SourceSpan,
                        did_you_mean)
from dlc.lang.overrides import apply_overrides
from dlc.lang.parse import MAX_SOURCE_CHARS, parse
from dlc.lang.recovery import semantic_errors_beside_syntax

# A choice output layer learns calibration offsets unless told not to (bench/LEARNING.md: the default model's main
# error is label bias; the offsets are kept only when they beat the raw layer on dev, see dlc/train/trainer.py).
DEFAULT_CALIBRATION = "fit"


# ====================================================================================================== public API
def compile_file(path: str | Path, overrides: Mapping[str, str] | None = None) -> ir.Graph:
    """Compile a .dln file. Relative template files and data paths resolve against the file's directory."""
    return compile_source(read_dln(path), str(path), overrides)


def read_dln(path: str | Path) -> str:
    """The text of a .dln file, every way of not being one (missing, a directory, not UTF-8, unreadable) a usage
    error: the one reader of .dln files, so a source rewritten after compile cannot reach a decoder unguarded."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise DlcUsageError(f"{path} is not a regular file", code="E104",      # a FIFO would hang, /dev/zero
                                hint="pass a .dln file")                          # fill memory
        if st.st_size > 4 * MAX_SOURCE_CHARS:          # UTF-8: at most 4 bytes a character; parse() checks exactly
            raise DlcSyntaxError(f"{path} is {st.st_size:,} bytes, over the cap of {MAX_SOURCE_CHARS:,} characters",
                                 code="E216", hint="a network itself is a few kB; long prompts go in template files")
        return p.read_text(encoding="utf-8")
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


def compile_source(text: str, path: str = "<string>", overrides: Mapping[str, str] | None = None) -> ir.Graph:
    """Compile .dln source text; `path` names it in errors and anchors relative files. A file with syntax errors
    also reports the semantic errors of its statements that parse (dlc.lang.recovery)."""
    try:
        program = parse(text, path)
    except CompileFailed as e:
        if all(isinstance(err, DlcSyntaxError) and err.code != "E216" for err in e.errors):
            more = semantic_errors_beside_syntax(text, path, lambda p: _Lowering(p, [], {}).run())
            if more:
                for err in more:
                    err.source = text
                raise CompileFailed([*e.errors, *more]) from None
        raise
    program, errors, sources = apply_overrides(program, overrides or {})
    return _Lowering(program, errors, sources).run()


# ====================================================================================================== lowering
class _Lowering:
    def __init__(self, program: S.Program, errors: list[DlcError], sources: Mapping[str, str]) -> None:
        self.p = program
        self.ck = Checker(program.path, program.text)
        self.ck.sources.update(sources)
        self.ck.errors.extend(errors)
        self.base_dir = Path(program.path).resolve().parent if not program.path.startswith("<") else Path.cwd()
        self.tpl = TemplateResolver(self.ck, self.base_dir, program.path)
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
            vals, settings, _ = self.ck.settings(d.body, schema(self.ck, "model"), f"model {n}")
            vals = {k: v for k, v in vals.items() if v is not INVALID}
            cfg = replace(models.get(n, ir.ModelConfig(name=n)), **fill("model", vals))
            if cfg.backend == "openai" and "model" not in vals:
                self.err("E326", f"model '{n}': an openai backend needs `model` (the server's model name)",
                         d.name.span, hint='add e.g. model = "gpt-4o-mini"')
            if "delay" in vals and cfg.backend != "scripted":
                self.err("E312", f"model '{n}': `delay` is a setting of the scripted backend only, and this model's "
                         f"backend is {cfg.backend}", settings["delay"].key_span,
                         hint="remove `delay`, or set backend = scripted (the deterministic test LM)")
            if "batch_rows" in vals and cfg.backend != "embedded":
                self.err("E312", f"model '{n}': `batch_rows` is a setting of the embedded backend only, and this "
                         f"model's backend is {cfg.backend}", settings["batch_rows"].key_span,
                         hint="remove `batch_rows` (a server batches on its own side)")
            if "scoring" in vals and cfg.backend != "embedded":
                self.err("E312", f"model '{n}': `scoring` is a setting of the embedded backend only, and this "
                         f"model's backend is {cfg.backend}", settings["scoring"].key_span,
                         hint="remove `scoring` (a server scores each request on its own)")
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
        self._data_target_span: SourceSpan | None = None
        if decl is None:
            return ir.DataConfig()
        vals, settings, _ = self.ck.settings(decl.body, schema(self.ck, "data"), "data")
        vals = {k: v for k, v in vals.items() if v is not INVALID}
        out = fill("data", vals)
        for k, v in vals.items():      # the custom keys
            if k == "fields":
                out[k] = self.fields(v, inputs)
            elif k == "task":
                out[k] = self.task(v, settings[k].value)
            elif k in ("path", "data_dir"):
                relative = not self.p.path.startswith("<") and not Path(v).is_absolute()
                out[k] = str((self.base_dir / v).resolve()) if relative else v
        self._data_target = "target_field" in out
        self._data_target_span = settings["target_field"].span if "target_field" in vals else None
        return ir.DataConfig(**{k: v for k, v in out.items() if v is not INVALID})

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
        vals, settings, _ = self.ck.settings(decl.body, schema(self.ck, "fit"), "fit")
        vals = {k: v for k, v in vals.items() if v is not INVALID}
        out = fill("fit", vals)
        if "train" in vals:            # the custom key
            for n, span in vals["train"]:
                if n not in layer_decls:
                    self.err("E302", f"fit.train names '{n}', which is not a layer", span,
                             hint=did_you_mean(n, layer_decls) or f"layers: {', '.join(layer_decls)}")
            out["train"] = tuple(n for n, _ in vals["train"] if n in layer_decls)
        fit = ir.FitConfig(**out)
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
        settings: dict[str, Any] = {}
        if decl is not None:
            vals, settings, _ = self.ck.settings(decl.body, schema(self.ck, "output"), "output")
        kind = out_layer.output.kind if out_layer is not None else "choice"
        default_metric = {"choice": "accuracy", "number": "number_presence", "text": "exact_match"}[kind]
        metric = vals.get("metric", default_metric)
        if metric is INVALID:
            metric = default_metric
        target = vals.get("target")
        if target is None or target is INVALID:
            target = data.target_field if self._data_target else "label"
        elif self._data_target_span is not None and data.target_field != target:
            # two places name the target field: they must agree (the data block used to win silently)
            self.err("E331", f"the target is set twice, differently: output {{ target = {target} }} and data "
                     f"{{ target_field = \"{data.target_field}\" }}", settings["target"].span,
                     hint=f"keep one of them (the data block's is on line {self._data_target_span.line})")
        return target, metric

    def layer(self, d: S.LayerDecl, *, is_output: bool, models: Mapping[str, ir.ModelConfig], g: nx.DiGraph,
              inputs: Mapping[str, S.Name]) -> ir.Layer | None:
        name = d.name.name
        n_errors = len(self.ck.errors)
        vals, settings, nested = self.ck.settings(d.body, schema(self.ck, "layer"), f"layer {name}",
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

        # forward template: explicit, or by shape: one input and hidden texts -> residual (the DLN join), other
        # parent lists -> named (each input under its name, hidden texts as thoughts), hidden text -> step by step
        if "template" in vals:
            fwd = self.tpl.template(vals["template"], "forward", name, "template")
        else:
            residual = parents[0] in inputs and not any(p in inputs for p in parents[1:]) if parents else False
            default = ("residual" if residual else "named") if len(parents) > 1 else (
                "classify" if is_output or out.kind != "text" else "step_by_step")
            fwd = Resolved(builtin_template("forward", default), d.span)

        # backward
        bvals, bsettings, _ = self.ck.settings(nested["backward"].body if "backward" in nested else None,
                                               schema(self.ck, "backward"), f"layer {name} backward")
        if "prompt" in bvals:
            bprompt = self.tpl.template(bvals["prompt"], "prompt", name, "backward.prompt")
        else:
            bprompt = Resolved(builtin_template("prompt", DEFAULT_PROMPT_TEMPLATE), d.span)
        posterior = self.tpl.posterior(bvals.get("posterior"), name, d.span)

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
        if vals.get("calibration") in ("fit", "batch") and out.kind != "choice":
            self.err("E329", f"calibration = {vals['calibration']} needs a choice output, and layer '{name}' "
                     f"outputs {out.kind}",
                     settings["calibration"].value.span, node=name,
                     hint="remove the calibration setting, or give the layer `output = choice { ... }`")

        if len(self.ck.errors) > n_errors or fwd is INVALID or bprompt is INVALID:
            return None
        # simple keys are copied (absent: the ir default); the custom ones (schema.py lists them) resolved above
        backward = ir.Backward(prompt_template=bprompt.ref,
                               posterior=tuple(ir.PosteriorComponent(r.ref, w) for r, w in posterior),
                               **fill("backward", bvals))
        calibration = vals.get("calibration", DEFAULT_CALIBRATION if is_output and out.kind == "choice"
                               else ir.Layer.calibration)
        return ir.Layer(name=name, parents=parents, template=fwd.ref, trainable=not vals.get("fixed", False),
                        output=out, generation=ir.Generation(**fill("layer", vals, ir.Generation)),
                        backward=backward, calibration=calibration, offsets=offsets, span=d.span.to_json(),
                        **fill("layer", vals, ir.Layer))

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


__all__ = ["compile_file", "compile_source", "builtin_template", "TEMPLATE_FILE_MAX"]
