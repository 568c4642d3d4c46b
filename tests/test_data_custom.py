"""Custom datasets (JSONL / JSON / CSV / split layouts / HF) and the generated tasks."""
from __future__ import annotations

import ast
import json
import operator
import re
from collections import Counter
from pathlib import Path

import pytest

from dlc import ir
from dlc.data import TASKS, load_splits
from dlc.errors import DlcDataError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"text": f"sentence {i}", "context": f"ctx {i}", "label": "pos" if i % 3 else "neg", "n": i}
        for i in range(50)]


def test_jsonl_single_file_carves_deterministic_disjoint_splits(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    cfg = ir.DataConfig(path=str(path), fields=(("x", "text"),))
    a = load_splits(cfg, ("x",))
    b = load_splits(cfg, ("x",), seed=7)  # the run seed does not move a custom file's splits
    assert (len(a.train), len(a.dev), len(a.test)) == (30, 10, 10)
    assert a == b and a.info is None
    texts = [e.inputs["x"] for s in (a.train, a.dev, a.test) for e in s]
    assert sorted(texts) == sorted(r["text"] for r in ROWS)
    assert a.train[0].id == "d/train/0"
    sized = load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),), dev_size=5, test_size=3,
                                      train_size=4), ("x",))
    assert (len(sized.train), len(sized.dev), len(sized.test)) == (4, 5, 3)


def test_values_become_text_and_target_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    s = load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),), target_field="n"), ("x",))
    ex = s.train[0]
    assert ex.target == ex.inputs["x"].split()[-1]  # the integer n as text


def test_multiple_inputs_by_name_and_by_mapping(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    s = load_splits(ir.DataConfig(path=str(path)), ("text", "context"))
    ex = s.train[0]
    assert ex.inputs["context"] == "ctx " + ex.inputs["text"].split()[-1]
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path)), ("q", "context"))
    assert e.value.code == "E805" and "'q'" in e.value.message and "text" in (e.value.hint or "")


def test_mapped_field_that_does_not_exist(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path), fields=(("x", "txt"),)), ("x",))
    assert e.value.code == "E804"
    assert "'txt'" in e.value.message and "did you mean 'text'" in e.value.hint
    assert "available fields: text, context, label, n" in e.value.hint
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),), target_field="lable"), ("x",))
    assert e.value.code == "E804" and "did you mean 'label'" in e.value.hint


def test_csv_tsv_and_json(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("question,answer\n\"Is it, really?\",yes\nNo way,no\nMaybe,yes\n", encoding="utf-8")
    s = load_splits(ir.DataConfig(path=str(csv_path), target_field="answer", dev_size=1, test_size=1), ("q",))
    got = sorted((e.inputs["q"], e.target) for e in s.train + s.dev + s.test)
    assert got == [("Is it, really?", "yes"), ("Maybe", "yes"), ("No way", "no")]
    tsv = tmp_path / "d.tsv"
    tsv.write_text("input\tlabel\na, b\tx\nc\ty\n", encoding="utf-8")
    s = load_splits(ir.DataConfig(path=str(tsv), dev_size=0, test_size=0), ("x",))
    assert [(e.inputs["x"], e.target) for e in s.train] in ([("a, b", "x"), ("c", "y")], [("c", "y"), ("a, b", "x")])
    js = tmp_path / "d.json"
    js.write_text(json.dumps({"examples": [{"input": "q", "label": 1}]}), encoding="utf-8")
    s = load_splits(ir.DataConfig(path=str(js), dev_size=0, test_size=0), ("x",))
    assert s.train == [ir.Example({"x": "q"}, "1", "d/train/0")]


def test_split_column_and_split_pattern_and_directory(tmp_path: Path) -> None:
    rows = [{"input": f"t{i}", "label": "a", "split": "train"} for i in range(4)]
    rows += [{"input": "v0", "label": "b", "split": "validation"}, {"input": "s0", "label": "a", "split": "test"}]
    s = load_splits(ir.DataConfig(path=str(_jsonl(tmp_path / "all.jsonl", rows))), ("x",))
    assert [e.inputs["x"] for e in s.train] == ["t0", "t1", "t2", "t3"]
    assert [e.inputs["x"] for e in s.dev] == ["v0"] and [e.inputs["x"] for e in s.test] == ["s0"]

    d = tmp_path / "ds"
    d.mkdir()
    _jsonl(d / "train.jsonl", [{"input": f"t{i}", "label": "a"} for i in range(10)])
    _jsonl(d / "test.jsonl", [{"input": "s0", "label": "a"}])
    for path in (str(d), str(d / "{split}.jsonl")):
        s = load_splits(ir.DataConfig(path=path, dev_size=2), ("x",))
        assert (len(s.train), len(s.dev), len(s.test)) == (8, 2, 1), path  # dev carved from train
        assert [e.inputs["x"] for e in s.test] == ["s0"]

    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(tmp_path / "none" / "{split}.jsonl")), ("x",))
    assert e.value.code == "E802"
    bad = _jsonl(tmp_path / "bad.jsonl", [{"input": "a", "label": "x", "split": "holdout"}])
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(bad)), ("x",))
    assert e.value.code == "E814"


def test_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "label": "x"}\n{"input": \n', encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(bad)), ("x",))
    assert e.value.code == "E815" and ":2:" in e.value.message
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(tmp_path / "missing.jsonl")), ("x",))
    assert e.value.code == "E802"
    xlsx = tmp_path / "d.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(xlsx)), ("x",))
    assert e.value.code == "E807" and ".jsonl" in e.value.hint
    empty = tmp_path / "e.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(empty)), ("x",))
    assert e.value.code == "E812"


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="navigat"), ("x",))
    assert e.value.code == "E803" and e.value.hint == "did you mean 'navigate'?"
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="mydata.jsonl"), ("x",))
    assert e.value.code == "E803" and "path" in e.value.hint
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(), ("x",))
    assert e.value.code == "E818"
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="gen:sort", train_size=-5), ("x",))
    assert e.value.code == "E811"


def test_hf_without_datasets_is_a_clear_error() -> None:
    try:
        import datasets  # noqa: F401
        pytest.skip("Hugging Face `datasets` is installed here")
    except ImportError:
        pass
    for cfg in (ir.DataConfig(path="hf:gsm8k:main"), ir.DataConfig(path="/some/dir/hf:gsm8k:main")):
        with pytest.raises(DlcDataError) as e:
            load_splits(cfg, ("x",))
        assert e.value.code == "E808" and "pip install datasets" in e.value.hint


# ---- generated tasks ---------------------------------------------------------------------------------------------

def _simulate_navigate(text: str) -> bool:
    """An independent re-implementation: parse the instruction sentences and walk them."""
    body = text.split("starting point? ", 1)[1].split("\nOptions:")[0]
    x = y = 0
    dx, dy = 0, 1
    for sent in re.findall(r"[^.]+\.", body):
        sent = sent.strip()
        m = re.fullmatch(r"Take (\d+) steps?(?: (forward|backward|left|right))?\.", sent)
        if m:
            n = int(m.group(1))
            d = m.group(2)
            vx, vy = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}[d] if d else (dx, dy)
            x, y = x + vx * n, y + vy * n
        elif sent == "Turn left.":
            dx, dy = -dy, dx
        elif sent == "Turn right.":
            dx, dy = dy, -dx
        elif sent == "Turn around.":
            dx, dy = -dx, -dy
        else:
            assert sent == "Always face forward.", sent
    return (x, y) == (0, 0)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    assert isinstance(node, ast.Constant) and isinstance(node.value, int)
    return node.value


def test_generated_labels_are_exact() -> None:
    s = load_splits(ir.DataConfig(task="gen:navigate"), ("x",))
    assert s.info is TASKS["gen:navigate"] and s.info.kind == "generated"
    assert (len(s.train), len(s.dev), len(s.test)) == TASKS["gen:navigate"].sizes
    for ex in s.train + s.dev + s.test:
        assert ex.target == ("yes" if _simulate_navigate(ex.inputs["x"]) else "no"), ex.inputs["x"]
    assert Counter(e.target for e in s.train) == {"yes": 150, "no": 150}
    s = load_splits(ir.DataConfig(task="gen:arithmetic", train_size=200), ("x",))
    for ex in s.train + s.test:
        expr = ex.inputs["x"].removesuffix(" =")
        assert ex.target == str(_evaluate(ast.parse(expr, mode="eval"))), expr
        assert expr.count("(") >= 1  # multi-step: at least two operations
    s = load_splits(ir.DataConfig(task="gen:sort", train_size=100), ("x",))
    for ex in s.train:
        words = ex.inputs["x"].split("List: ")[1].split()
        assert ex.target.split() == sorted(words) and len(set(words)) == len(words)


def test_generated_splits_are_seeded_sized_and_disjoint() -> None:
    cfg = ir.DataConfig(task="gen:navigate", train_size=40, dev_size=20, test_size=30)
    a = load_splits(cfg, ("x",), seed=1)
    b = load_splits(cfg, ("x",), seed=1)
    c = load_splits(cfg, ("x",), seed=2)
    assert a == b
    assert (len(a.train), len(a.dev), len(a.test)) == (40, 20, 30)
    assert a.dev == c.dev and a.test == c.test  # dev/test are fixed (data seed 42) ...
    assert a.train != c.train                   # ... train follows the run seed
    for s in (a, c):
        tr, dv, te = ({e.inputs["x"] for e in split} for split in (s.train, s.dev, s.test))
        assert len(tr) == 40 and not (tr & dv) and not (tr & te) and not (dv & te)
    fields = load_splits(ir.DataConfig(task="gen:sort", train_size=2, fields=(("w", "words"),)), ("w",))
    assert fields.train[0].inputs["w"] == fields.train[0].inputs["w"].strip() and "List:" not in fields.train[0].inputs["w"]


def test_align_targets_to_output_classes(tmp_path: Path) -> None:
    from dlc.data import align_targets
    rows = [{"input": f"s{i}", "label": lab} for i, lab in enumerate(["Yes", " no", "yes", "No"])]
    s = load_splits(ir.DataConfig(path=str(_jsonl(tmp_path / "d.jsonl", rows)), dev_size=0, test_size=0), ("x",))
    out = ir.Output("choice", (ir.Label("yes", ("yes", "Yes")), ir.Label("no", ("no", "No"))))
    aligned = align_targets(s, out, layer="y")
    assert sorted(e.target for e in aligned.train) == ["no", "no", "yes", "yes"]
    assert align_targets(s, ir.Output("text")) is s
    with pytest.raises(DlcDataError) as e:
        align_targets(s, ir.Output("choice", (ir.Label("pos", ("pos",)), ir.Label("neg", ("neg",)))), layer="y")
    assert e.value.code == "E819" and "layer 'y' (pos, neg)" in e.value.message
