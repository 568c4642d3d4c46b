"""The compiled artifact: exact JSON round trip, atomic writes, schema errors, the graph hash and find_last."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from dlc import ir
from dlc.artifacts import manifest
from dlc.artifacts.identity import config_identity, graph_identities, graph_identity
from dlc.lang.compiler import compile_file, compile_source
from dlc.lang.rewrite import rewrite_prompts
from dlc.errors import DlcArtifactError, DlcUsageError

from conftest import GRAPHS as GRAPHS_DIR

GRAPHS = sorted(GRAPHS_DIR.glob("*.dln"))


@pytest.mark.parametrize("path", GRAPHS, ids=[p.stem for p in GRAPHS])
def test_round_trip_exact(path: Path, tmp_path: Path) -> None:
    g = compile_file(path)
    d = manifest.to_json(g)
    assert manifest.from_json(json.loads(json.dumps(d))) == g
    out = manifest.write(g, tmp_path / "sub" / "m.json")
    assert manifest.read(out) == g
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


# graph hashes recorded by earlier dlc for the shipped networks: before the posterior-sample keys (82d9084) and
# while `posterior_max_tokens` was hashed as written on every layer (4a0a5e9..2d30105). A run directory carries its
# hash, and `--resume`, `dlc sweep` and `dlc eval/run/serve` compare it: if one of these changes, runs written by
# that dlc no longer resume or verify. (A deliberate change of graphs/dln*.dln or a built-in template changes them
# too: then record the new values with the old code.)
BEFORE_POSTERIOR_KEYS = {"dln1": "59ef4160f4fef3510321c72a1b860067e60f434294777e65397b64ce158babd2",
                         "dln2": "67efa6a8b62455e38797f3d4f663f6e3eaced9d8cf5b3030c9b5fc2a8973c7d6"}
WINDOW = {"dln1": "358d914118490a4d67b0fa3966bb8cafac0415b016b38abb68cc68a993435dcf",
          "dln2": "43e00f5a22ae3e1b9fe7b4976aec4b2cb8c4f38617eb267151f0c34ef6043a53",
          "dln2, h pinned to 512": "f2a97ce100444c2d17f75fa583c46d0564efcd34287bea17bd2835292271bad6"}


def _with_backward(g: ir.Graph, node: str, **kw: object) -> ir.Graph:
    lay = g.layers[node]
    return dataclasses.replace(g, layers=dict(g.layers, **{node: dataclasses.replace(
        lay, backward=dataclasses.replace(lay.backward, **kw))}))


def test_networks_that_sample_as_before_keep_the_hash_earlier_dlc_recorded() -> None:
    """A network without hidden layers, and a DLN-2 whose hidden layer pins the old 512-token cap, mean what they
    meant before the posterior keys existed: they hash as then, so their old runs resume by naming the network."""
    dln1 = compile_file(next(p for p in GRAPHS if p.stem == "dln1"))
    dln2 = compile_file(next(p for p in GRAPHS if p.stem == "dln2"))
    pinned = _with_backward(dln2, "h", posterior_max_tokens=512)
    assert graph_identity(dln1) == BEFORE_POSTERIOR_KEYS["dln1"]
    assert graph_identity(pinned) == BEFORE_POSTERIOR_KEYS["dln2"]
    # today's DLN-2 samples at the layer's 128 tokens: another algorithm, another hash
    assert graph_identity(dln2) not in BEFORE_POSTERIOR_KEYS.values()
    # and the hashes written between 4a0a5e9 and the hashing by effect are still recognised
    assert graph_identities(dln1) == (BEFORE_POSTERIOR_KEYS["dln1"], WINDOW["dln1"])
    assert graph_identities(dln2)[1:] == (WINDOW["dln2"],)
    assert WINDOW["dln2, h pinned to 512"] in graph_identities(pinned)
    # the cap is hashed by what it does: 0 on a 128-token layer is 128
    assert graph_identity(_with_backward(dln2, "h", posterior_max_tokens=128)) == graph_identity(dln2)


def test_an_artifact_from_before_the_posterior_keys_keeps_what_it_ran_with() -> None:
    """Artifacts and run directories written before `backward.posterior_max_tokens` / `posterior_layer_stop`
    existed drew their samples up to `backward.max_tokens` and ended them at `backward.stop`: they still load with
    exactly that, so a resumed run changes nothing, and their recorded hash still verifies."""
    g = compile_file(next(p for p in GRAPHS if p.stem == "dln2"))
    d = json.loads(json.dumps(manifest.to_json(g)))
    for node in ("h", "y"):
        del d["nodes"][node]["backward"]["posterior_max_tokens"]
        del d["nodes"][node]["backward"]["posterior_layer_stop"]
    old = manifest.from_json(d)
    assert old.layers["h"].backward.posterior_max_tokens == old.layers["h"].backward.max_tokens == 512
    assert old.layers["h"].backward.posterior_layer_stop is False
    assert g.layers["h"].backward.posterior_max_tokens == 0         # compiled today: the layer's own cap
    assert g.layers["h"].backward.posterior_layer_stop is True
    assert graph_identity(old) == BEFORE_POSTERIOR_KEYS["dln2"]


def test_the_layer_stop_switch_is_in_the_hash_only_where_it_adds_a_stop() -> None:
    """`posterior_layer_stop` changes what a sample is only on a sampled layer with a stop string of its own: there
    it changes the hash (an old run of that network is not resumed under the new meaning, and no hash of the
    earlier dlc is claimed); elsewhere it is left out."""
    g = compile_file(next(p for p in GRAPHS if p.stem == "dln2"))
    assert graph_identity(_with_backward(g, "h", posterior_layer_stop=False)) == graph_identity(g)
    assert graph_identity(_with_backward(g, "y", posterior_max_tokens=7, posterior_layer_stop=False)) \
        == graph_identity(g)                                         # y is never sampled
    lay = g.layers["h"]
    stopped = dataclasses.replace(g, layers=dict(g.layers, h=dataclasses.replace(
        lay, generation=dataclasses.replace(lay.generation, stop=("\n\n",)))))
    old_way = _with_backward(stopped, "h", posterior_layer_stop=False)
    assert graph_identity(stopped) != graph_identity(old_way)
    assert graph_identities(stopped) == (graph_identity(stopped),)
    assert len(graph_identities(old_way)) == 2


def test_document_contents() -> None:
    g = compile_file(next(p for p in GRAPHS if p.stem == "dln2"))
    d = manifest.to_json(g)
    assert d["schema_version"] == ir.SCHEMA_VERSION and d["dlc_version"]
    assert d["source"]["sha256"] == g.source_sha256
    assert d["network"]["order"] == ["h", "y"]
    assert d["edges"] == [["x", "h"], ["x", "y"], ["h", "y"]]
    assert d["nodes"]["x"] == {"kind": "input"}
    assert d["parameters"]["dln2.h.prompt"] == {"layer": "h", "init": "", "trainable": True}
    tpl = d["templates"][d["nodes"]["y"]["template"]]
    assert tpl["name"] == "residual" and tpl["text"] == g.layers["y"].template.text
    assert {t["name"] for t in d["templates"].values()} == {"step_by_step", "residual", "proposal", "prior",
                                                            "prior_answer"}


def test_graph_hash_ignores_place_time_and_comments(tmp_path: Path) -> None:
    src = next(p for p in GRAPHS if p.stem == "dln2")
    g1 = compile_file(src)
    copy = tmp_path / "elsewhere" / "dln2.dln"
    copy.parent.mkdir()
    copy.write_text("# an extra comment\n" + src.read_text(encoding="utf-8"), encoding="utf-8")
    g2 = compile_file(copy)
    assert g1.source_sha256 != g2.source_sha256
    assert graph_identity(g1) == graph_identity(g2) and config_identity(g1) == config_identity(g2)
    changed = compile_source(rewrite_prompts(src.read_text(encoding="utf-8"), str(src), {"h": "Think."}))
    assert graph_identity(changed) != graph_identity(g1)
    other = compile_file(src, {"fit.iters": "3"})
    assert graph_identity(other) == graph_identity(g1) and config_identity(other) != config_identity(g1)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(DlcUsageError) as ei:
        manifest.read(tmp_path / "missing.json")
    assert ei.value.code == "E104"   # a missing file is E104 everywhere (compile, show, fit)
    (tmp_path / "d.json").mkdir()
    with pytest.raises(DlcUsageError) as ei:
        manifest.read(tmp_path / "d.json")
    assert ei.value.code == "E104" and "is a directory, not a compiled network" in ei.value.message  # was E502
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": ', encoding="utf-8")
    with pytest.raises(DlcArtifactError) as ei:
        manifest.read(bad)
    assert ei.value.code == "E502"
    g = compile_source("input x\nlayer y(x)\noutput y\n")
    d = manifest.to_json(g)
    d["schema_version"] = "dlc/manifest/v0"
    bad.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(DlcArtifactError) as ei:
        manifest.read(bad)
    assert ei.value.code == "E507"
    d = manifest.to_json(g)
    del d["nodes"]["y"]["backward"]
    bad.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(DlcArtifactError) as ei:
        manifest.read(bad)
    assert ei.value.code == "E508" and str(bad) in ei.value.message
    assert "the entry 'backward' is missing" in ei.value.message and "KeyError" not in ei.value.message
    d = manifest.to_json(g)
    del d["nodes"]
    bad.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(DlcArtifactError) as ei:
        manifest.read(bad)
    assert ei.value.message.endswith("the manifest is malformed: the entry 'nodes' is missing")
    d = manifest.to_json(g)
    d["nodes"] = "y"
    with pytest.raises(DlcArtifactError) as ei:
        manifest.from_json(d)
    assert ei.value.message == "the manifest is malformed: an entry has the wrong type or shape"
    with pytest.raises(DlcArtifactError):
        manifest.from_json([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("block, key, value, says", [
    ("fit", "iters", "x", "'iters' of FitConfig must be an integer, not \"x\""),
    ("fit", "seed", True, "'seed' of FitConfig must be an integer, not true"),
    ("fit", "bwd_temp", "hot", "'bwd_temp' of FitConfig must be a number, not \"hot\""),
    ("fit", "do_first_eval", 1, "'do_first_eval' of FitConfig must be true or false, not 1"),
    ("data", "train_size", "big", "'train_size' of DataConfig must be an integer, not \"big\""),
    ("data", "task", 7, "'task' of DataConfig must be a string, not 7"),
    ("fit", "validation", "best", "'validation' of FitConfig must be one of \"accuracy\", \"loglik\", not \"best\""),
])
def test_a_hand_edited_value_of_the_wrong_type_is_e508(block: str, key: str, value: object, says: str) -> None:
    """Were TypeErrors deep in a fit (`range("x")`), or accepted: the decoder now checks each scalar's JSON type
    (and a Literal's values) against the IR field, and names the field."""
    d = manifest.to_json(compile_source("input x\nlayer y(x)\noutput y\n"))
    assert key in d[block]
    d[block][key] = value
    with pytest.raises(DlcArtifactError) as ei:
        manifest.from_json(d)
    assert ei.value.code == "E508" and ei.value.message == f"the manifest is malformed: {says}"


def test_scalars_are_checked_not_converted() -> None:
    """A float field written as an integer stays an integer: the graph hash is over the JSON as written."""
    g = compile_source("input x\nlayer y(x)\noutput y\nfit { bwd_temp = 1 }\n")
    d = manifest.to_json(g)
    d["fit"]["bwd_temp"] = 1
    back = manifest.from_json(d)
    assert back.fit.bwd_temp == 1 and type(back.fit.bwd_temp) is int
    assert manifest.to_json(back) == d


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = compile_source("input x\nlayer y(x)\noutput y\n")
    out = manifest.write(g, tmp_path / "m.json")
    before = out.read_text(encoding="utf-8")

    def boom(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(DlcArtifactError) as ei:
        manifest.write(compile_source("input x\nlayer y(x) { prompt = \"new\" }\noutput y\n"), out)
    assert ei.value.code == "E506"
    assert out.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_find_last(tmp_path: Path) -> None:
    with pytest.raises(DlcArtifactError) as ei:
        manifest.find_last(tmp_path)
    assert ei.value.code == "E505"
    g = compile_source("input x\nlayer y(x)\noutput y\n", "net.dln")
    out = manifest.write(g, manifest.default_path(g, tmp_path))
    manifest.record_last(out, tmp_path)
    assert manifest.find_last(tmp_path) == out.resolve()
    shutil.rmtree(tmp_path / ".dlc" / "net.json", ignore_errors=True)
    out.unlink()
    with pytest.raises(DlcArtifactError):
        manifest.find_last(tmp_path)
