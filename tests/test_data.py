"""The paper's splits, exactly: sizes and md5 fingerprints of shared/data/README.md for every task and split."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dlc import ir
from dlc.data import TASKS, fingerprint, load_splits, load_task
from dlc.data.bigbench import bb_minus_bbh, option_shuffle
from dlc.errors import DlcDataError

from conftest import DATA
needs_data = pytest.mark.skipif(not (DATA / "README.md").is_file(),
                                reason=f"the shared offline data ({DATA}) is not available on this machine")

# task: (train, dev, test, fp train x, fp train y, fp dev x, fp test x, fp test y) -- shared/data/README.md
EXPECTED = {
    "hyperbaton": (1000, 300, 250, "d68268abae04", "ecaed01fa991", "673a5087a1fd", "3e7a4c52b17e", "bdfda1115b46"),
    "navigate": (375, 375, 250, "c6451bce2a40", "e35971c1530f", "5dfdeb0fbb3b", "74d4a7b56ec7", "0aa7d8ee07f7"),
    "date_understanding": (59, 119, 250, "1de0f340ed60", "2c2980100a39", "64956fb48a7d", "b811eb0c54dc",
                           "b8c56fada0ca"),
    "logical_deduction_seven_objects": (225, 225, 250, "9a588ee232bb", "a8c1348cc549", "f4bfddccce04",
                                        "43a9a111f8dc", "d6917032b43f"),
    "mpqa": (1000, 256, 250, "60ec52447677", "f8594808145e", "434597e22aeb", "3c6ce3b5ac0d", "85198b7288cf"),
    "trec": (1000, 256, 250, "8adc28026c1c", "0ed508d2b06c", "93166a657476", "e815ad6c4df4", "3a0cb540c165"),
    "subj": (1000, 256, 250, "e0210310c96a", "50433b1310cf", "e05053547c18", "ba24645dd456", "3a57706e32b7"),
    "disaster": (1000, 250, 250, "2bfe1acbab9f", "a2c746c8aef6", "fe5b90b2e36d", "8416800cdf82", "8ffc2ca46644"),
    "airline": (1000, 250, 250, "9e1b1eb0c72e", "22718478a5fb", "6110897cdc84", "f71fae71df6c", "bcf555843b5d"),
    "gsm8k": (3736, 3737, 1319, "0b25b4d3440f", "11e7f1d83838", "08815a93bada", "098cd05a5319", "893ed699db5b"),
}

# task: (size, fp(inputs), fp(targets), label counts) of BIG-bench minus BBH (README step 1)
BB_MINUS_BBH = {
    "hyperbaton": (49750, "337525305953", "343c51a7e77b", {"(A)": 24879, "(B)": 24871}),
    "navigate": (750, "5a868b22f467", "47158655bf77", {"Yes": 395, "No": 355}),
    "date_understanding": (119, "9f2259685ba6", "fb2005f1460e", {"(A)": 118, "(E)": 1}),
    "logical_deduction_seven_objects": (450, "9fd097491a5f", "b55b738b754d", None),
}


def test_fingerprint_definition() -> None:
    import hashlib
    assert fingerprint(["a", "b"]) == hashlib.md5(b"a\x1eb").hexdigest()[:12]
    assert fingerprint(["a", "b"]) != fingerprint(["ab"])


def test_every_paper_task_has_expected_values() -> None:
    assert set(EXPECTED) == {t for t, i in TASKS.items() if i.kind == "paper"}
    for task, exp in EXPECTED.items():
        assert TASKS[task].sizes == exp[:3]


@needs_data
@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_paper_splits_match_reference(task: str) -> None:
    raw = load_task(task, root=DATA)
    n_train, n_dev, n_test, fp_tx, fp_ty, fp_dx, fp_sx, fp_sy = EXPECTED[task]
    assert (len(raw.train), len(raw.dev), len(raw.test)) == (n_train, n_dev, n_test)
    assert fingerprint([r["input"] for r in raw.train]) == fp_tx
    assert fingerprint([r["raw_label"] for r in raw.train]) == fp_ty
    assert fingerprint([r["input"] for r in raw.dev]) == fp_dx
    assert fingerprint([r["input"] for r in raw.test]) == fp_sx
    assert fingerprint([r["raw_label"] for r in raw.test]) == fp_sy


@needs_data
@pytest.mark.parametrize("task", sorted(BB_MINUS_BBH))
def test_bb_minus_bbh_decontamination(task: str) -> None:
    pool = bb_minus_bbh(task, DATA)
    size, fp_x, fp_y, counts = BB_MINUS_BBH[task]
    assert len(pool) == size
    assert fingerprint([e["input"] for e in pool]) == fp_x
    assert fingerprint([e["target"] for e in pool]) == fp_y
    if counts is not None:
        assert dict(Counter(e["target"] for e in pool)) == counts
    # no test item leaks into train/dev
    raw = load_task(task, root=DATA)
    test_inputs = {r["input"] for r in raw.test}
    assert not test_inputs & {r["input"] for r in raw.train + raw.dev}


@needs_data
def test_gsm8k_balanced_cut_matches_reference() -> None:
    """README: max_*_size=300 gives 300/300/300, dev fp 888089983c91, train fp 2423f1c80acf (seed 42) /
    9a07ec8cf498 (seed 13)."""
    cfg = ir.DataConfig(task="gsm8k", train_size=300, dev_size=300, test_size=300, cut="balanced")
    for seed, fp_train in ((42, "2423f1c80acf"), (13, "9a07ec8cf498")):
        s = load_splits(cfg, ("question",), seed=seed, data_dir=DATA)
        assert (len(s.train), len(s.dev), len(s.test)) == (300, 300, 300)
        assert fingerprint([e.inputs["question"] for e in s.train]) == fp_train
        assert fingerprint([e.inputs["question"] for e in s.dev]) == "888089983c91"
        assert len({e.id for e in s.train}) == 300  # duplicates drawn with replacement still get unique ids


@needs_data
def test_balanced_cut_upsamples_with_duplicates() -> None:
    cfg = ir.DataConfig(task="navigate", train_size=300, cut="balanced")
    s = load_splits(cfg, ("x",), data_dir=DATA)
    assert len(s.train) == 300
    unique = len({e.inputs["x"] for e in s.train})
    assert 150 < unique < 300  # README: "navigate at 300 gives about 190 unique items"
    assert Counter(e.target for e in s.train) == {"yes": 150, "no": 150}


@needs_data
def test_examples_carry_canonical_labels_and_stable_ids() -> None:
    s = load_splits(ir.DataConfig(task="disaster", train_size=10, dev_size=5, test_size=0), ("x",), data_dir=DATA)
    assert (len(s.train), len(s.dev), len(s.test)) == (10, 5, 0)
    assert {e.target for e in s.train} <= {"yes", "no"}
    assert s.train[0].id == "disaster/train/0" and s.dev[4].id == "disaster/dev/4"
    assert s.train[0].inputs["x"].startswith("Is the following tweet relevant to a disaster? ")
    assert s.info is TASKS["disaster"]
    full = load_splits(ir.DataConfig(task="disaster"), ("x",), data_dir=DATA)
    assert full.train[:10] == s.train  # a size is the first n of the whole split
    for task in ("hyperbaton", "date_understanding", "mpqa", "trec", "gsm8k"):
        ex = load_splits(ir.DataConfig(task=task, train_size=50), ("x",), data_dir=DATA).train
        names = TASKS[task].label_names
        if names:
            assert {e.target for e in ex} <= set(names), task


@needs_data
def test_field_mapping_on_paper_task() -> None:
    cfg = ir.DataConfig(task="navigate", fields=(("q", "question"), ("opts", "options")), train_size=3)
    s = load_splits(cfg, ("q", "opts"), data_dir=DATA)
    ex = s.train[0]
    assert ex.inputs["opts"] == "- Yes\n- No"
    assert ex.inputs["q"] + "\nOptions:\n" + ex.inputs["opts"] == load_splits(
        ir.DataConfig(task="navigate", train_size=3), ("x",), data_dir=DATA).train[0].inputs["x"]
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="navigate", fields=(("x", "qestion"),)), ("x",), data_dir=DATA)
    assert e.value.code == "E804" and "qestion" in e.value.message and "question" in (e.value.hint or "")


def test_option_shuffle_moves_the_target() -> None:
    import numpy as np
    ex = {"input": "Q?\nOptions:\n(A) red\n(B) green\n(C) blue", "target": "(B)"}
    for seed in range(20):
        out = option_shuffle(ex, np.random.RandomState(seed))
        head, _, opts = out["input"].partition("\nOptions:\n")
        assert head == "Q?"
        lines = opts.split("\n")
        assert sorted(line[4:] for line in lines) == ["blue", "green", "red"]
        letter = out["target"]
        assert next(line for line in lines if line.startswith(letter))[4:] == "green"


def test_missing_data_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLC_DATA_DIR", raising=False)
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="navigate"), ("x",), data_dir=tmp_path / "nope")
    assert e.value.code == "E801" and "dlc data fetch" in (e.value.hint or "")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="navigate"), ("x",), data_dir=tmp_path)
    assert e.value.code == "E802" and "navigate" in e.value.message and "dlc data fetch navigate" in e.value.hint


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlc.data import data_dir, default_data_dir
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("DLC_DATA_DIR", str(b))
    assert data_dir(str(a)) == a
    assert data_dir() == b
    monkeypatch.delenv("DLC_DATA_DIR")
    assert data_dir(must_exist=False) == default_data_dir()
    assert default_data_dir().parts[-2:] == ("dlc", "data")


def test_corrupt_task_file_is_a_clear_error(tmp_path: Path) -> None:
    for rel in TASKS["disaster"].files:
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_text('[{"sentence1": "x", "label"', encoding="utf-8")
    with pytest.raises(DlcDataError) as e:
        load_splits(ir.DataConfig(task="disaster"), ("x",), data_dir=tmp_path)
    assert e.value.code == "E815"


@needs_data
def test_mismatched_bigbench_file_is_detected(tmp_path: Path) -> None:
    import json
    import shutil
    bbh, bb = TASKS["navigate"].files
    for rel in (bbh, bb):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / rel, tmp_path / rel)
    doc = json.loads((tmp_path / bb).read_text())
    doc["examples"] = doc["examples"][:900]  # drop some BBH items from the pool
    (tmp_path / bb).write_text(json.dumps(doc))
    with pytest.raises(DlcDataError) as e:
        load_task("navigate", root=tmp_path)
    assert e.value.code == "E816"


def test_task_info_contract() -> None:
    nav = TASKS["navigate"]
    assert nav.labels[0] == ir.Label("yes", ("yes", "Yes")) and nav.metric == "accuracy" and nav.kind == "paper"
    assert TASKS["hyperbaton"].labels[0] == ir.Label("A", ("A", "(A)"))
    assert TASKS["logical_deduction_seven_objects"].label_names == tuple("ABCDEFG")
    assert TASKS["trec"].label_names == ("description", "entity", "expression", "human", "location", "number")
    assert TASKS["disaster"].label_names == ("no", "yes") and TASKS["disaster"].canonical("Relevant") == "yes"
    assert TASKS["gsm8k"].labels == () and TASKS["gsm8k"].metric == "number_presence"
    assert TASKS["mpqa"].instruction.startswith("Read the following review")
    assert all(t.instruction for t in TASKS.values())
