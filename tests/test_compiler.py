"""The compiler: every example graph compiles; defaults, overrides, determinism, and rewrite_prompts."""
from __future__ import annotations

from pathlib import Path

import pytest

from dlc import ir
from dlc.lang.compiler import compile_file, compile_source
from dlc.lang.rewrite import rewrite_prompts
from dlc.errors import CompileFailed

from conftest import GRAPHS as GRAPHS_DIR

GRAPHS = sorted(GRAPHS_DIR.glob("*.dln"))
REQUIRED = {"dln1", "dln2", "deep3", "branched", "navigate", "date_understanding", "subj"}


def test_required_examples_exist() -> None:
    assert REQUIRED <= {p.stem for p in GRAPHS}


@pytest.mark.parametrize("path", GRAPHS, ids=[p.stem for p in GRAPHS])
def test_example_compiles(path: Path) -> None:
    g = compile_file(path)
    assert g.output in g.layers and g.order[-1] == g.output
    assert set(g.order) == set(g.layers)
    for name in g.order:   # topological: parents come first
        for p in g.layers[name].parents:
            assert p in g.inputs or g.order.index(p) < g.order.index(name)
    assert g.source_sha256 and len(g.source_sha256) == 64
    assert g.data.task is not None and g.fit.iters > 0


def test_dln2_shape() -> None:
    g = compile_file(next(p for p in GRAPHS if p.stem == "dln2"))
    assert g.order == ("h", "y")
    h, y = g.layers["h"], g.layers["y"]
    assert h.template.name == "step_by_step" and h.output.kind == "text"
    assert y.parents == ("x", "h") and y.template.name == "residual"
    assert y.output.label_names == ("subjective", "objective")
    assert [(c.template.name, c.weight) for c in h.backward.posterior] == [("prior_answer", 0.5), ("prior", 0.5)]
    assert h.backward.prompt_template.name == "proposal"


def test_branched_and_deep3_shapes() -> None:
    b = compile_file(next(p for p in GRAPHS if p.stem == "branched"))
    assert b.layers["y"].parents == ("x", "steps", "brief") and b.order == ("brief", "steps", "y")
    d = compile_file(next(p for p in GRAPHS if p.stem == "deep3"))
    assert d.order == ("analysis", "reasoning", "y")
    assert d.children("analysis") == ("reasoning",)


def test_minimal_file_defaults() -> None:
    g = compile_source("input x\nlayer h(x)\nlayer y(x, h) { output = choice { a: \"a\", b: \"b\" } }\noutput y\n",
                       "mini.dln")
    assert g.name == "mini"
    h, y = g.layers["h"], g.layers["y"]
    assert h.template.name == "step_by_step" and y.template.name == "residual"
    assert h.prompt == "" and h.trainable and h.model == "default" and h.backward_model == "default"
    assert h.backward.stop == ("[END]",) and h.backward.max_tokens == 512
    assert g.metric == "accuracy" and g.target == "label"
    assert list(g.models) == ["default"] and g.models["default"].backend == "embedded"
    assert g.fit == ir.FitConfig() and g.data == ir.DataConfig()
    one = compile_source("input x\nlayer y(x) { output = number }\noutput y\n")
    assert one.layers["y"].template.name == "classify" and one.metric == "number_presence"
    txt = compile_source("input x\nlayer y(x)\noutput y\n")
    assert txt.layers["y"].template.name == "classify" and txt.metric == "exact_match"


def test_data_task_supplies_labels() -> None:
    g = compile_source('input x\nlayer y(x) { output = choice }\noutput y\ndata { task = "navigate" }\n')
    assert g.layers["y"].output.label_names == ("yes", "no")
    g2 = compile_source('input x\nlayer y(x)\noutput y\ndata { task = "subj" }\n')
    assert g2.layers["y"].output.kind == "choice"


def test_models_and_posterior_weights_normalised() -> None:
    src = ('input x\nmodel remote { backend = openai  model = "gpt-4o-mini"  base_url_env = "MY_URL"'
           '  api_key_env = MY_KEY }\n'
           'layer h(x) { backward_model = remote  backward { posterior = { prior: 1, edit: 3 } } }\n'
           'layer y(x, h) { model = tiny }\noutput y\n')
    g = compile_source(src)
    assert set(g.models) == {"default", "remote", "tiny"}
    assert g.models["remote"] == ir.ModelConfig(name="remote", backend="openai", model="gpt-4o-mini",
                                                base_url_env="MY_URL", api_key_env="MY_KEY")
    assert [(c.template.name, c.weight) for c in g.layers["h"].backward.posterior] == [("prior", 0.25),
                                                                                        ("edit", 0.75)]


def test_order_is_deterministic_and_lexicographic() -> None:
    src = "input x\nlayer zz(x)\nlayer aa(x)\nlayer mm(x)\nlayer y(x, zz, aa, mm)\noutput y\n"
    assert compile_source(src).order == ("aa", "mm", "zz", "y")


def test_inline_and_file_templates(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "fwd.j2").write_text("{{ prompt }} {{ x }}\nAnswer:", encoding="utf-8")
    net = tmp_path / "net.dln"
    net.write_text('input x\nlayer h(x) { template = """{{ input }} -- {{ prompt }}""" }\n'
                   'layer y(x, h) { template = file "t/fwd.j2" }\noutput y\n'
                   'data { path = "d.jsonl" }\n', encoding="utf-8")
    g = compile_file(net)
    assert g.layers["h"].template.kind == "inline" and g.layers["h"].template.name == "<inline:h.template>"
    ref = g.layers["y"].template
    assert ref.kind == "file" and ref.name == "t/fwd.j2" and Path(ref.path) == tmp_path / "t" / "fwd.j2"
    assert g.data.path == str(tmp_path / "d.jsonl")


# ------------------------------------------------------------------------------------------------ overrides
BASE = 'input x\nlayer h(x) { prompt = "Think." }\nlayer y(x, h) { prompt = "Answer." }\noutput y\n'


def test_overrides_apply() -> None:
    g = compile_source(BASE, overrides={
        "fit.iters": "5", "data.task": "subj", "layer.h.prompt": "Think step by step.", "layer.y.model": "tiny",
        "model.default.model": "tiny", "output.metric": "exact_match", "layer.h.backward.posterior": "edit",
        "fit.train": "[h]", "fit.posterior_temp": "0.5", "layer.y.fixed": "true"})
    assert g.fit.iters == 5 and g.fit.train == ("h",) and g.fit.posterior_temp == 0.5
    assert g.data.task == "subj"
    assert g.layers["h"].prompt == "Think step by step."
    assert g.layers["y"].model == "tiny" and not g.layers["y"].trainable
    assert g.models["default"].model == "tiny"
    assert g.metric == "exact_match"
    assert [c.template.name for c in g.layers["h"].backward.posterior] == ["edit"]


def test_override_errors_are_e1xx_with_did_you_mean() -> None:
    with pytest.raises(CompileFailed) as ei:
        compile_source(BASE, overrides={"fit.iter": "5", "layer.hh.prompt": "x", "modle.default.model": "tiny"})
    errs = {e.code: e for e in ei.value.errors}
    assert [e.code for e in ei.value.errors] == ["E102", "E102", "E102"]
    hints = sorted(e.hint or "" for e in ei.value.errors)
    assert "did you mean 'fit.iters'?" in hints and "did you mean 'h'?" in hints and "did you mean 'model'?" in hints
    assert "--set fit.iter:1:1: error[E102]" in ei.value.render()
    assert errs


def test_override_values_get_the_same_checks() -> None:
    with pytest.raises(CompileFailed) as ei:
        compile_source(BASE, overrides={"fit.iters": "lots", "fit.batch_size": "0", "layer.h.format": "html"})
    assert sorted(e.code for e in ei.value.errors) == ["E310", "E311", "E314"]
    rendered = ei.value.render()
    assert "fit.batch_size=0" in rendered


# ------------------------------------------------------------------------------------------------ rewrite_prompts
TRICKY = ['He said "yes".', 'ends with a quote"', 'triple """ inside', "back\\slash \\n literal",
          "\nleading newline", "multi\nline\n  indented", "", "tab\there"]


@pytest.mark.parametrize("new", TRICKY)
def test_rewrite_prompts_round_trip(new: str) -> None:
    src = ('# header comment\ninput x\nlayer h(x) { prompt = "Think."  max_tokens = 64 }  # keep me\n'
           'layer g(x)\nlayer y(x, h, g) {\n  output = choice { a: "a", b: "b" }\n}\noutput y\n')
    out = rewrite_prompts(src, "net.dln", {"h": new, "g": new + "!", "y": "Answer: " + new})
    g = compile_source(out, "net.dln")
    assert g.prompts() == {"g": new + "!", "h": new, "y": "Answer: " + new}
    assert "# keep me" in out and "# header comment" in out and "max_tokens = 64" in out


def test_rewrite_prompts_on_examples() -> None:
    for path in GRAPHS:
        text = path.read_text(encoding="utf-8")
        g = compile_file(path)
        new = {n: f"Learned prompt for {n}:\n- be \"careful\"" for n in g.order}
        g2 = compile_source(rewrite_prompts(text, str(path), new), str(path))
        assert g2.prompts() == new
        assert g2.layers[g2.output].output == g.layers[g.output].output


@pytest.mark.parametrize("path", GRAPHS, ids=[p.stem for p in GRAPHS])
def test_every_template_renders_with_the_contract_variables(path: Path) -> None:
    """What the engine will pass (dlc/ir.py docstring) is enough for every template of every example."""
    from dlc.lang import templates as T

    g = compile_file(path)
    for name in g.order:
        lay = g.layers[name]
        texts = [f"text of {p}" for p in lay.parents]
        fwd_vars = {"prompt": lay.prompt, "input": texts[0], "hidden": "\n\n".join(texts[1:]), "inputs": texts,
                    **dict(zip(lay.parents, texts))}
        forward = T.render(lay.template.text, fwd_vars)
        assert texts[0] in forward
        for comp in lay.backward.posterior:
            msgs = T.messages(comp.template.text) or [""]
            out = T.render(comp.template.text, {**fwd_vars, "forward": forward, "output": "h-hat", "target": "yes",
                                                "next_prompt": "next", "message": msgs[0]})
            assert out
        pool = T.messages(lay.backward.prompt_template.text)
        assert pool
        ex = {"input": "in", "output": "out", "target": "tgt"}
        out = T.render(lay.backward.prompt_template.text, {"prompt": lay.prompt, "successes": [ex], "errors": [ex],
                                                           "message": pool[0]})
        assert out.rstrip().endswith(":") and "[END]" in out


def test_n_shots_needs_iters_zero():
    """Issue 17, engine 5: demonstrations are an evaluation baseline the trainer never uses, so n_shots > 0 with
    iters > 0 (set or by default) is refused at compile time; the baseline (iters = 0) and training compile."""
    from dlc.errors import CompileFailed
    src = 'input x\nlayer y(x) { output = choice { yes: "yes", no: "no" } }\noutput y\nfit { %s }\n'
    assert compile_source(src % "iters = 0  n_shots = 5").fit.n_shots == 5
    assert compile_source(src % "iters = 3").fit.iters == 3
    for body, default in (("iters = 3  n_shots = 2", False), ("n_shots = 2", True)):
        with pytest.raises(CompileFailed) as ei:
            compile_source(src % body)
        [e] = ei.value.errors
        assert e.code == "E330" and "iters = 0" in e.hint and ("the default" in e.message) == default
        assert (e.span.line, e.span.col) == (4, 7 + body.index("n_shots"))
    with pytest.raises(CompileFailed) as ei:                         # also through --set
        compile_source(src % "iters = 0", overrides={"fit.n_shots": "2", "fit.iters": "1"})
    assert [e.code for e in ei.value.errors] == ["E330"]
    assert compile_source(src % "iters = 4", overrides={"fit.n_shots": "2", "fit.iters": "0"}).fit.iters == 0


def test_the_target_is_named_in_one_place_or_alike():
    """Issue 17, using it 4: `output { target }` and `data { target_field }` name one thing; set in both with
    different fields it is E331 at the output's key (the data block used to win silently)."""
    src = 'input x\nlayer y(x) { output = choice { yes: "yes", no: "no" } }\noutput y { %s }\ndata { %s }\n'
    assert compile_source(src % ("target = answer", "")).data.target_field == "answer"
    assert compile_source(src % ("", 'target_field = "answer"')).target == "answer"
    both = compile_source(src % ("target = answer", 'target_field = "answer"'))
    assert both.target == both.data.target_field == "answer"
    with pytest.raises(CompileFailed) as ei:
        compile_source(src % ("target = answer", 'target_field = "label"'))
    [e] = ei.value.errors
    assert e.code == "E331" and "answer" in e.message and "label" in e.message and "line 4" in e.hint
    assert e.span.line == 3
    with pytest.raises(CompileFailed) as ei:                         # also through --set
        compile_source(src % ("target = answer", ""), overrides={"data.target_field": '"label"'})
    assert [e.code for e in ei.value.errors] == ["E331"]


def test_several_inputs_are_each_shown_under_their_name():
    """Issue 17, using it 5: a layer reading two graph inputs used to get the residual join, which presents the
    second input as "Your thoughts were:". Inputs now default to `named` (each under its name); one input followed
    by hidden layers keeps the residual join of the paper."""
    from dlc.engine.forward import render_forward
    src = ('input question, context\nlayer h(question) { output = text }\nlayer y(%s) { prompt = "Answer it."\n'
           '  output = choice { yes: "yes", no: "no" } }\noutput y\n')
    g = compile_source(src.replace("layer h(question) { output = text }\n", "") % "question, context")
    assert g.layers["y"].template.name == "named"
    text = render_forward(g, g.layers["y"], "Answer it.", {"question": "Is it?", "context": "It is."})
    assert text == "Answer it.\n\nquestion:\nIs it?\n\ncontext:\nIt is.\n\nAnswer:"
    g = compile_source(src % "question, context, h")
    assert g.layers["y"].template.name == "named"
    text = render_forward(g, g.layers["y"], "", {"question": "Is it?", "context": "It is.", "h": "Think."})
    assert text == "question:\nIs it?\n\ncontext:\nIt is.\n\nYour thoughts were:\nThink.\n\nAnswer:"
    assert compile_source(src % "question, h").layers["y"].template.name == "residual"
    with pytest.raises(CompileFailed) as ei:                           # the new variable is a reserved name
        compile_source("input parents\nlayer y(parents)\noutput y\n")
    assert ei.value.errors[0].code == "E305"
