"""Hostile inputs that used to crash (a traceback, exit 3) or hang (issue 16, "Crashes"): each is now a clear error or
handled, quickly. Scripted LM, bounded loops, no network."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import time

import pytest

from dlc.artifacts import manifest
from dlc.cli import main
from dlc.errors import CompileFailed, DlcError, DlcTemplateError, DlcUsageError
from dlc.lang import templates as T
from dlc.lang.compiler import compile_source
from dlc.lm.base import ChatPrompt, GenerateRequest, ScoreRequest
from dlc.lm.cache import CACHE_FILE, DiskCache
from dlc.lm.cached import CachedLM
from dlc.lm.scripted import ScriptedLM
from dlc.train.plan import validations

from conftest import DATA, REPO

DLN1 = (REPO / "graphs" / "dln1.dln").read_text()
SMALL = ["--set", "fit.iters=2", "--set", "fit.batch_size=4", "--set", "fit.num_p_samples=3",
         "--set", "data.train_size=16", "--set", "data.dev_size=8", "--set", "data.test_size=12",
         "--set", "model.default.backend=scripted"]


# ------------------------------------------------------------------------------------------------ the cost plan

def test_validation_count_is_closed_form_and_matches_the_trainer_rule():
    for iters in range(0, 30):
        for freq in range(1, 7):
            for first in (True, False):
                brute = sum(1 for t in range(iters + 1)
                            if (t % freq == 0 or t == iters) and (t > 0 or first))
                assert validations(iters, freq, first) == brute, (iters, freq, first)
    t = time.perf_counter()
    assert validations(10**11, 2, True) == 5 * 10**10 + 1
    assert validations(10**30 + 1, 2, False) == 5 * 10**29 + 1
    assert time.perf_counter() - t < 0.1


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory")
def test_dry_run_with_a_huge_iters_answers_at_once(tmp_path):
    p = subprocess.run([sys.executable, "-m", "dlc", "fit", str(REPO / "graphs" / "dln1.dln"), *SMALL,
                        "--set", "fit.iters=100000000000", "--dry-run", "--data-dir", str(DATA)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "100000000000 training iteration(s)" in p.stdout and "(50000000001 validation(s))" in p.stdout
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------ the LLM cache

CORRUPT = ["{not json", "[1,2,3]", '"text"', "null", "12", '{"texts": 5}', '{"texts": ["a"]}',
           '{"logprobs": "x", "tokens": [], "prompt_tokens": 1}', '{"logprobs": [1], "tokens": [2], "prompt_tokens": 1}',
           '{"texts": ["a", "b"], "prompt_tokens": -1, "completion_tokens": 1, "finish_reasons": ["stop"]}',
           "[" * 100_000 + "]" * 100_000]


def _corrupt_all(directory, value) -> int:
    con = sqlite3.connect(directory / CACHE_FILE)
    with con:
        n = con.execute("UPDATE entries SET value = ?", (value,)).rowcount
    con.close()
    return n


def test_a_row_that_is_not_json_is_a_counted_miss(tmp_path, capsys):
    c = DiskCache(tmp_path)
    c.put("k", {"x": 1})
    _corrupt_all(tmp_path, "{not json")
    assert c.get("k") is None and c.unreadable == 1
    assert c.get("k") is None and c.unreadable == 2
    assert "unreadable row in the LLM cache" in capsys.readouterr().err     # warned once
    c.put("k", {"x": 2})
    assert c.get("k") == {"x": 2}


@pytest.mark.parametrize("value", CORRUPT, ids=[v[:20] for v in CORRUPT])
def test_corrupt_rows_are_misses_answered_by_the_model_and_rewritten(tmp_path, value):
    gen = [GenerateRequest(ChatPrompt("Propose a prompt."), max_tokens=8, temperature=0.7, n=2, seed=1, tag="g")]
    sco = [ScoreRequest("Review: good.", " positive", tag="s")]
    inner = ScriptedLM()
    lm = CachedLM(inner, DiskCache(tmp_path))
    fresh_g, fresh_s = lm.generate(gen), lm.score(sco)
    assert _corrupt_all(tmp_path, value) == 2
    again_g, again_s = lm.generate(gen), lm.score(sco)
    assert [r.texts for r in again_g] == [r.texts for r in fresh_g]
    assert [r.logprobs for r in again_s] == [r.logprobs for r in fresh_s]
    assert not again_g[0].cached and not again_s[0].cached           # recomputed
    assert lm.cache.unreadable == 2 and lm.usage.cache_hits == 0
    third_g, third_s = lm.generate(gen), lm.score(sco)                # the rows were rewritten
    assert third_g[0].cached and third_s[0].cached and lm.cache.unreadable == 2


@pytest.mark.skipif(not DATA.is_dir(), reason="no data directory")
def test_a_fit_over_a_corrupt_cache_runs_and_matches(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dln1.dln").write_text(DLN1)
    args = ["fit", "dln1.dln", *SMALL, "--data-dir", str(DATA), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress"]
    assert main([*args, "--run-dir", "a"]) == 0
    assert _corrupt_all(tmp_path / "cache", "[1,2,3]") > 0
    assert main([*args, "--run-dir", "b"]) == 0, capsys.readouterr().err
    assert "unreadable row in the LLM cache" in capsys.readouterr().err
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("a", "b"))
    assert (a["dev_accuracy"], a["test_accuracy"], a["prompts"]) == (b["dev_accuracy"], b["test_accuracy"],
                                                                      b["prompts"])


# ------------------------------------------------------------------------------------------------ templates

def _with_template(template: str) -> str:
    return DLN1.replace("template = classify", f'template = """{template}"""')


@pytest.mark.parametrize("tpl", ['{% include "x.j2" %}{{ input }}', '{% import "m.j2" as m %}{{ input }}',
                                 '{% from "m.j2" import f %}{{ input }}', '{% extends "base.j2" %}{{ input }}',
                                 "{{ lipsum(10**9) }}{{ input }}", "{{ [input, prompt]|random }}"])
def test_templates_that_could_only_fail_at_render_are_refused_at_compile_time(tpl):
    with pytest.raises(CompileFailed) as e:
        compile_source(_with_template(tpl), "net.dln")
    assert [x.code for x in e.value.errors] == ["E358"]


def test_unknown_filter_is_a_compile_error():
    with pytest.raises(CompileFailed) as e:
        compile_source(_with_template("{{ input|nosuchfilter }}"), "net.dln")
    assert [x.code for x in e.value.errors] == ["E351"]


HOSTILE = {
    "range": "{{ range(10**9)|list|length }}",
    "repeat": '{{ "a" * 10**9 }}',
    "repeat list": "{{ ([1] * 10**9)|length }}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "exponential macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(60) }}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "doubling ~": "{% set ns = namespace(x='a') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "doubling +": "{% set ns = namespace(x='a') %}{% for i in range(64) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "power": "{{ 2 ** (10 ** 9) }}",
    "center filter": '{{ "a"|center(10**9) }}',
    "center method": '{{ "a".center(10**9) }}',
    "percent width": '{{ "%1000000000d" % 1 }}',
    "format width": '{{ "{:1000000000}".format(1) }}',
    "long output": "{% for i in range(100000) %}{{ input }}{% endfor %}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_templates_compile_and_stop_within_bounds_at_render(name):
    src = HOSTILE[name] + "{{ input }}{{ prompt }}"
    compile_source(_with_template(src), "net.dln")            # valid Jinja: the bounds are enforced at render
    t = time.perf_counter()
    with pytest.raises(DlcTemplateError) as e:
        T.render(src, {"input": "x" * 1000, "prompt": "p"})
    assert e.value.code == "E359", e.value
    assert time.perf_counter() - t < 10


def test_render_bound_errors_name_the_layer():
    from dlc.engine.forward import render_forward

    g = compile_source(_with_template('{{ "a" * 10**9 }}{{ input }}{{ prompt }}'), "net.dln")
    with pytest.raises(DlcError) as e:
        render_forward(g, g.layers["y"], "p", {"x": "text"})
    assert e.value.code == "E359" and e.value.node == "y" and "in node y" in e.value.render()


def test_a_failing_template_expression_is_e353_not_a_traceback():
    for src in ("{{ 1 / 0 }}", '{{ "a" - 1 }}', "{{ input[10**6] }}"):
        with pytest.raises(DlcTemplateError) as e:
            T.render(src, {"input": "x"})
        assert e.value.code in ("E353", "E352"), src


def test_ordinary_templates_render_as_before():
    src = ("{% for ex in errors %}{{ loop.index }}. {{ ex.input ~ ' -> ' ~ ex.target }}\n{% endfor %}"
           "{{ prompt|upper }} {{ '-' * 3 }} {{ '%s!' % input }} {{ '{}?'.format(input) }}"
           "{% macro m(x) %}[{{ x }}]{% endmacro %}{{ m(input) }}")
    out = T.render(src, {"errors": [{"input": "a", "target": "b"}, {"input": "c", "target": "d"}],
                         "prompt": "p", "input": "i"})
    assert out == "1. a -> b\n2. c -> d\nP --- i! i?[i]"


# ------------------------------------------------------------------------------------------------ text and values

def test_lone_surrogates_are_clear_errors_not_encode_crashes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.dln").write_text(DLN1)
    with pytest.raises(CompileFailed) as e:                    # a \uD800 escape in the .dln
        compile_source(DLN1.replace('prompt = "Read', 'prompt = "\\uD800Read'), "net.dln")
    assert [x.code for x in e.value.errors] == ["E213"]
    pair = compile_source(DLN1.replace('prompt = "Read', 'prompt = "\\uD83D\\uDE00Read'), "net.dln")
    assert pair.layers["y"].prompt.startswith("\U0001F600Read")           # an escaped pair is one character
    with pytest.raises(CompileFailed) as e:                    # --set from Python or undecodable argv bytes
        compile_source(DLN1, "net.dln", {"layer.y.prompt": "a\ud800b"})
    assert [x.code for x in e.value.errors] == ["E107"]
    assert main(["compile", "net.dln", "--set", "layer.y.prompt=a\udcffb"]) == 1
    err = capsys.readouterr().err
    assert "E107" in err and "Traceback" not in err and not (tmp_path / ".dlc").exists()
    # a graph built in Python with such text: manifest.write refuses it cleanly (nothing half-written)
    g = compile_source(DLN1, "net.dln")
    bad = dataclasses.replace(g, layers={**g.layers, "y": dataclasses.replace(g.layers["y"], prompt="x\ud800")})
    with pytest.raises(DlcError) as e:
        manifest.write(bad, tmp_path / "out.json")
    assert e.value.code == "E506" and "not valid Unicode" in e.value.message
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("value,code", [("9" * 5000, "E214"), ("[" * 1000 + "]" * 1000, "E215"),
                                        ("{a: " * 1000 + "1" + "}" * 1000, "E215"),
                                        ("[" * 100_000 + "]" * 100_000, "E215")])
def test_huge_numbers_and_deep_values_are_syntax_errors(value, code, tmp_path, monkeypatch, capsys):
    with pytest.raises(CompileFailed) as e:
        compile_source(DLN1.replace("iters = 10", f"iters = {value}"), "net.dln")
    assert [x.code for x in e.value.errors] == [code]
    # the same as --set: not a value, so taken as text, which iters refuses (a one-line error, never a traceback)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.dln").write_text(DLN1)
    assert main(["compile", "net.dln", "--set", f"fit.iters={value}"]) == 1
    err = capsys.readouterr().err
    assert "error[" in err and "Traceback" not in err
