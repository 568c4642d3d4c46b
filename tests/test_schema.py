"""The one schema (`ir.setting` fields read by `dlc.lang.schema`): every block's keys, and each range enforced once,
with E311, by the compiler and by the FitConfig gate alike."""
from __future__ import annotations

from dataclasses import fields, replace

import pytest

from dlc import ir
from dlc.errors import CompileFailed, DlcSemanticError
from dlc.lang import schema
from dlc.lang.compiler import compile_source
from dlc.train.config import check_config

NET = """input x
layer y(x) { prompt = "Classify." output = choice { yes: "yes", no: "no" } }
output y
"""


def test_block_keys() -> None:
    assert list(schema.keys("layer")) == [
        "template", "prompt", "fixed", "output", "max_tokens", "temperature", "top_p", "stop", "model",
        "backward_model", "format", "system", "answer_prefix", "calibration", "offsets"]
    assert list(schema.keys("backward")) == ["prompt", "posterior", "max_tokens", "stop", "posterior_max_tokens",
                                             "posterior_layer_stop"]
    assert list(schema.keys("model")) == [f.name for f in fields(ir.ModelConfig)][1:]
    assert list(schema.keys("data")) == [f.name for f in fields(ir.DataConfig)]
    assert list(schema.keys("output")) == ["target", "metric"]
    assert list(schema.keys("fit")) == list(ir.FitConfig.keys())


def test_custom_keys_are_listed_in_the_schema_docstring() -> None:
    custom = [f"{b}.{k}" for b in schema.BLOCKS for k, key in schema.keys(b).items() if key.custom]
    assert custom and all(c in " ".join((schema.__doc__ or "").split()) for c in custom)


def test_defaults_come_from_the_ir() -> None:
    g = compile_source(NET)
    lay = g.layers["y"]
    assert lay.generation == ir.Generation() and lay.backward.stop == ("[END]",) == ir.Backward.stop
    assert lay.calibration == "fit" and lay.trainable and lay.model == "default"


@pytest.mark.parametrize("block,key", [(b, k) for b in ("layer", "backward", "model", "data", "fit")
                                       for k, key in schema.keys(b).items() if key.range is not None])
def test_every_range_is_checked_by_the_compiler(block: str, key: str) -> None:
    lo, hi, lo_open = schema.keys(block)[key].range  # type: ignore[misc]
    bad = (lo if lo_open else lo - 1) if lo is not None else hi + 1
    kind = schema.keys(block)[key].kind
    value = str(int(bad)) if kind == "int" else f"{float(bad)}"
    where = {"layer": "layer.y.", "backward": "layer.y.backward.", "model": "model.default.", "data": "data.",
             "fit": "fit."}[block]
    with pytest.raises(CompileFailed) as ei:
        compile_source(NET, overrides={where + key: value})
    assert [e.code for e in ei.value.errors] == ["E311"]


@pytest.mark.parametrize("key", list(schema.ranges("fit")))
def test_fit_ranges_are_the_same_in_python(key: str) -> None:
    lo, hi, lo_open = schema.ranges("fit")[key]
    bad = (lo if lo_open else lo - 1) if lo is not None else hi + 1
    g = compile_source(NET)
    with pytest.raises(DlcSemanticError) as ei:
        check_config(g, replace(ir.FitConfig(), **{key: bad}))
    assert ei.value.code == "E311" and ei.value.message.startswith(f"fit.{key} must be")


@pytest.mark.parametrize("block,key", [(b, k) for b in ("layer", "backward", "model", "data", "fit")
                                       for k, key in schema.keys(b).items()
                                       if key.range is not None and key.range[1] is not None])
def test_every_upper_bound_is_checked_by_the_compiler(block: str, key: str) -> None:
    hi = schema.keys(block)[key].range[1]  # type: ignore[index]
    kind = schema.keys(block)[key].kind
    value = str(int(hi) + 1) if kind == "int" else f"{float(hi) + 1}"
    where = {"layer": "layer.y.", "backward": "layer.y.backward.", "model": "model.default.", "data": "data.",
             "fit": "fit."}[block]
    with pytest.raises(CompileFailed) as ei:
        compile_source(NET, overrides={where + key: value})
    assert [e.code for e in ei.value.errors] == ["E311"]


def test_a_seed_numpy_cannot_take_is_refused_at_compile_time() -> None:
    """fit.seed reaches numpy's RandomState (the data cut), which takes 0..2**32-1: a bigger seed compiled, then
    crashed the fit with a ValueError traceback. The message shows the integers whole (was 4.29497e+09)."""
    compile_source(NET, overrides={"fit.seed": str(2**32 - 1)})
    with pytest.raises(CompileFailed) as ei:
        compile_source(NET, overrides={"fit.seed": str(2**32)})
    assert ei.value.errors[0].code == "E311"
    assert ei.value.errors[0].message == "'seed' must be at most 4294967295, got 4294967296"
