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
from dlc.artifacts.identity import config_identity, graph_identity
from dlc.artifacts.canonical import canonical_sha256
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


def test_an_artifact_from_before_the_posterior_cap_keeps_the_cap_it_ran_with() -> None:
    """Artifacts and run directories written before `backward.posterior_max_tokens` existed drew their posterior
    samples up to `backward.max_tokens`: they still load, with that cap, so a resumed run changes nothing."""
    g = compile_file(next(p for p in GRAPHS if p.stem == "dln2"))
    d = json.loads(json.dumps(manifest.to_json(g)))
    for node in ("h", "y"):
        del d["nodes"][node]["backward"]["posterior_max_tokens"]
    old = manifest.from_json(d)
    assert old.layers["h"].backward.posterior_max_tokens == old.layers["h"].backward.max_tokens == 512
    assert g.layers["h"].backward.posterior_max_tokens == 0         # compiled today: the layer's own cap
    # its identity is the one recorded when it was written (the key absent), and that of the same cap set today
    legacy = {k: v for k, v in d.items() if k not in ("generated_at", "dlc_version", "source", "models", "fit", "data")}
    for node in legacy["nodes"].values():
        node.pop("span", None)
    for t in legacy["templates"].values():
        t.pop("path", None)
    assert graph_identity(old) == canonical_sha256(legacy)
    pinned = dataclasses.replace(g, layers={n: dataclasses.replace(lay, backward=dataclasses.replace(
        lay.backward, posterior_max_tokens=lay.backward.max_tokens)) for n, lay in g.layers.items()})
    assert graph_identity(pinned) == graph_identity(old) != graph_identity(g)


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
