"""Hostile data files (issue 16): a split column on some rows only, and other files that used to be read wrongly
or crash. Each is one clear E8xx error naming the file and the row, or read correctly. No model, no network."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlc import ir
from dlc.data import load_splits
from dlc.errors import DlcDataError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n: int = 30) -> list[dict]:
    return [{"text": f"t{i}", "label": "pos" if i % 2 else "neg", "split": ("train", "dev", "test")[i % 3]}
            for i in range(n)]


# ------------------------------------------------------------------------------------------------ split column

@pytest.mark.parametrize("missing", [0, 5, 29])
def test_a_split_column_on_some_rows_is_required_on_all(tmp_path: Path, missing: int) -> None:
    """Missing from row 1 the column used to be ignored (rows marked test trained on); elsewhere the error read
    "has split ''". Now: E820 naming the row without it and a row with it."""
    rows = _rows()
    del rows[missing]["split"]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),)), ("x",))
    assert e.value.code == "E820"
    assert f"row {missing + 1} has no 'split'" in e.value.message and str(path) in e.value.message
    assert f"row {1 if missing else 2} has one" in e.value.message


def test_a_split_column_on_every_row_is_obeyed(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", _rows())
    s = load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),)), ("x",))
    assert (len(s.train), len(s.dev), len(s.test)) == (10, 10, 10)
    assert {e.inputs["x"] for e in s.test} == {f"t{i}" for i in range(2, 30, 3)}


def test_an_empty_split_value_in_a_csv_is_a_bad_split(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label,split\na,pos,train\nb,neg,\n", encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),)), ("x",))
    assert e.value.code == "E814" and "row 2 has split ''" in e.value.message


# ------------------------------------------------------------------------------------------------ text and nesting

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("name,text,where", [
    ("d.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b \\ud800", "label": "neg"}\n', "d.jsonl:2: text"),
    ("d.json", '[{"text": "a", "label": "pos"}, {"text": "b", "label": "\\udfff"}]', "[1].label"),
])
def test_a_lone_surrogate_in_a_data_file_is_e815_naming_where(tmp_path: Path, name: str, text: str, where: str
                                                              ) -> None:
    """Used to load, then crash in the cache key (UnicodeEncodeError) once the run directory existed."""
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(tmp_path / name), fields=(("x", "text"),)), ("x",))
    assert e.value.code == "E815" and where in e.value.message and "surrogate" in e.value.message


def test_an_escaped_pair_is_one_character(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"\U0001F600 {i}", "label": "pos"}) + "\n" for i in range(10)))
    s = load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),)), ("x",))
    assert s.train[0].inputs["x"].startswith("\U0001F600")


@pytest.mark.parametrize("name,text", [("d.jsonl", '{"text": "a", "label": "pos"}\n{"text": ' + DEEP + "}\n"),
                                       ("d.json", DEEP)])
def test_100k_deep_json_in_a_data_file_is_e815(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(tmp_path / name), fields=(("x", "text"),)), ("x",))
    assert e.value.code == "E815" and "too deeply" in e.value.message


# ------------------------------------------------------------------------------------------------ one code, one meaning

@pytest.mark.parametrize("csv,line,n", [("input,label\na,yes\nb\nc,no\n", 3, 1), ("input,label\na,yes,more\n", 2, 3)])
def test_a_csv_row_with_too_few_or_too_many_values_is_e822(tmp_path: Path, csv: str, line: int, n: int) -> None:
    """A short row used to be read with empty values (a target '' trained on) and a long one was E815."""
    (tmp_path / "d.csv").write_text(csv, encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(tmp_path / "d.csv")), ("x",))
    assert e.value.code == "E822" and f"d.csv:{line}: {n} value(s) for 2 header columns" in e.value.message


@pytest.mark.parametrize("suffix, header, twice", [(".csv", "input,label,input", "'input'"),
                                                   (".tsv", "input\tlabel\tlabel", "'label'")])
def test_a_header_naming_a_column_twice_is_e815(tmp_path: Path, suffix: str, header: str, twice: str) -> None:
    """csv.DictReader keeps the last of two same-named columns: the first was dropped without a word."""
    sep = "\t" if suffix == ".tsv" else ","
    path = tmp_path / f"d{suffix}"
    path.write_text(header + "\n" + sep.join(("a", "yes", "b")) + "\n", encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path)), ("x",))
    assert e.value.code == "E815" and f"d{suffix}:1: the header names the column(s) {twice} more than once" \
        in e.value.message


def test_unnamed_trailing_columns_are_not_duplicates(tmp_path: Path) -> None:
    """Spreadsheet exports end rows with empty columns ("text,label,,"): those unnamed columns are no duplicate."""
    path = tmp_path / "d.csv"
    path.write_text("text,label,,\n" + "".join(f"t{i},{'pos' if i % 2 else 'neg'},,\n" for i in range(12)),
                    encoding="utf-8")
    splits = load_splits(ir.DataConfig(path=str(path), fields=(("x", "text"),)), ("x",))
    assert splits.train and {e.target for e in splits.train} <= {"pos", "neg"}


def test_a_json_list_target_is_e823_not_read_as_its_item(tmp_path: Path) -> None:
    rows = [{"input": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(10)] + [{"input": "x",
                                                                                         "label": ["pos"]}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path)), ("x",))
    assert e.value.code == "E823" and '["pos"]' in e.value.message
    rows[-1] = {"input": ["a", "list", "input"], "label": "pos"}          # an input may be JSON text
    s = load_splits(ir.DataConfig(path=str(_jsonl(path, rows))), ("x",))
    assert '["a", "list", "input"]' in [e.inputs["x"] for sp in (s.train, s.dev, s.test) for e in sp]
    assert all("_structured" not in f for f in s.train[0].inputs)


def test_a_data_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)                                     # used to hang the read
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(fifo)), ("x",))
    assert e.value.code == "E802" and "not a regular file" in e.value.message


def test_a_data_file_over_the_size_cap_is_e821_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    from dlc.data import store

    path = _jsonl(tmp_path / "d.jsonl", [{"input": "x" * 100, "label": "pos"}] * 20)
    monkeypatch.setattr(store, "MAX_DATA_FILE", 1000)      # the rule, without writing 256 MiB
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path)), ("x",))
    assert e.value.code == "E821" and "over the cap" in e.value.message


# ------------------------------------------------------------------------------------------------ paper task files

@pytest.mark.parametrize("task, text, what", [
    ("navigate", "{}", "no 'examples'"),
    ("navigate", '{"examples": 5}', "TypeError"),
    ("navigate", '{"examples": [{"input": "go", "target_scores": "x"}]}', "TypeError"),
    ("navigate", '{"examples": [{"input": "go"}]}', "no 'target_scores'"),
    ("subj", '{"label": "0"}\n', "no 'sentence'"),
])
def test_paper_task_files_of_another_shape_are_e816(tmp_path: Path, task: str, text: str, what: str) -> None:
    """Valid JSON that is not the published layout (damaged, replaced): were KeyError/TypeError tracebacks from
    inside the loader. Every file of the task gets `text` (the loader reads the first one it needs)."""
    from dlc.data.loader import load_task
    from dlc.data.tasks import TASKS

    for rel in TASKS[task].files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_task(task, root=tmp_path)
    assert e.value.code == "E816", e.value
    assert e.value.message.startswith(f"the files of task '{task}' are not in the format it is published in (")
    assert what in e.value.message and f"dlc data fetch {task}" in (e.value.hint or "")


def test_a_wrong_target_field_is_named_not_the_input(tmp_path: Path) -> None:
    """With columns sentence,label and target_field 'nope', the single input had two candidate columns and the
    error was E805 about the input; the cause is the target field (E804)."""
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\na,yes\nb,no\n", encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(path=str(path), target_field="nope"), ("x",))
    assert e.value.code == "E804" and "nope" in e.value.message and "data.target_field" in e.value.message
