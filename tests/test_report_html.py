"""`dlc report`: the static HTML report of a run (and of several runs side by side), from real runs.

The runs are real fits with the scripted backend (an ordinary backend behind the same cache and accounting, see
tests/test_cli_fit.py) of a DLN-2 network on a custom dataset whose texts, like the network's prompt, are hostile
HTML: whatever a run holds must reach the page as text. The browser test loads the page from disk in headless
Chromium (the Debian package; `.ci/run` installs it and sets DLC_REQUIRE_BROWSER=1, so CI cannot pass by skipping),
checks the DOM it built for every section and the inline SVG, and that a screenshot is not blank.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dlc.artifacts.rundir import RunDir
from dlc.cli import main
from dlc.report import html as report_html
from dlc.report.compare import wilson
from dlc.report.markup import word_diff

SECTIONS = [sid for sid, _ in report_html.NAV]
HOSTILE_PROMPT = "Decide: is it <b>subjective</b> & 'objective'? </div><script>alert('prompt')</script>"
NET = """network hostile
input x

layer h(x) {
  template = step_by_step
  prompt = ""
  output = text
  max_tokens = 32
  backward {
    prompt = proposal
    posterior = { prior_answer: 0.5, prior: 0.5 }
  }
}

layer y(x, h) {
  template = residual
  prompt = "%s"
  output = choice { subjective: "subjective", objective: "objective" }
}

output y { target = label }
data { path = "hostile.jsonl"  fields = { x: "text" }  train_size = 16  dev_size = 8  test_size = 8 }
fit  { iters = 2  batch_size = 4  num_p_samples = 3  num_h_samples = 3 }
model default { backend = scripted }
""" % HOSTILE_PROMPT.replace('"', '\\"')
ROWS = [{"text": t + " · &amp; &lt;not an entity&gt;", "label": lab} for t, lab in [      # every shown row has an entity
    ("<script>alert('data')</script> a joyous, heartfelt film", "subjective"),
    ("</td></tr></table><img src=x onerror=alert(1)> the train leaves at noon", "objective"),
    ("&amp; &lt;not an entity&gt; <b>bold</b> claims about the plot", "subjective"),
    ("<!-- a comment --> he moves to a small town", "objective"),
    ("<svg onload=alert(2)><style>body{display:none}</style> a dull, tired sequel", "subjective"),
    ("\"quoted\" 'text' with <a href=\"https://example.com/x\">a link</a>", "objective"),
]] * 6


def _fit(tmp: Path, run_dir: str, *args: str) -> Path:
    assert main(["fit", "hostile.dln", "--no-progress", "--run-dir", run_dir, *args]) == 0
    return tmp / run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Two finished runs (seeds 42 and 13) and what the first fit printed."""
    tmp = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    mp.setenv("DLC_CACHE_DIR", str(tmp / "cache"))
    mp.chdir(tmp)
    try:
        (tmp / "hostile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
        (tmp / "hostile.dln").write_text(NET, encoding="utf-8")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            first = _fit(tmp, "runs/seed42")
        second = _fit(tmp, "runs/seed13", "--set", "fit.seed=13")
    finally:
        mp.undo()
    return first, second, buf.getvalue()


class _Dom(HTMLParser):
    """Elements, ids and text of a page, as a browser's parser builds them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.ids: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.classes: Counter[str] = Counter()
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for k, v in attrs:
            self.attrs.append((tag, k, v))
            if k == "id" and v:
                self.ids.append(v)
            if k == "class" and v:
                self.classes.update(v.split())

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ the page

def test_fit_writes_the_report_and_says_where(runs):
    first, _, out = runs
    assert (first / "report.html").is_file()
    assert "report: runs/seed42/report.html" in out.splitlines()
    dom = _Dom(_read(first / "report.html"))
    assert [i for i in dom.ids if i in SECTIONS] == SECTIONS      # every section, in the navigation's order


def test_every_text_from_the_run_is_escaped(runs):
    text = _read(runs[0] / "report.html")
    dom = _Dom(text)
    assert [dom.tags[t] for t in ("script", "img", "b", "svg", "style")] == [0, 0, 0, 4, 1]
    assert not re.search(r"<(script|img|b|link|iframe|object)\b", text, re.I)
    assert all(v.startswith("#") for t, k, v in dom.attrs if t == "a" and k == "href")   # navigation anchors only
    shown = "".join(dom.text)
    assert HOSTILE_PROMPT in shown                                   # the prompt as text (before -> after)
    assert "<svg onload=alert(2)><style>body{display:none}</style> a dull" in shown   # dataset text, as text
    assert "</td></tr></table><img src=x onerror=alert(1)>" in shown
    assert "&amp; &lt;not an entity&gt;" in shown                     # entities are not decoded twice
    for tag, k, v in dom.attrs:                                       # no handler or link smuggled into markup
        assert not k.startswith("on"), (tag, k, v)


def test_the_page_is_self_contained(runs):
    text = _read(runs[0] / "report.html")
    dom = _Dom(text)
    csp = [v for t, k, v in dom.attrs if t == "meta" and k == "content" and v and "default-src" in v]
    assert "Content-Security-Policy" in text and csp and csp[0].startswith("default-src 'none'")
    for tag, k, v in dom.attrs:
        if k in ("src", "href", "xlink:href", "action", "srcset", "data"):
            assert (v or "").startswith("#"), (tag, k, v)             # in-page anchors only
        if k == "xmlns":
            assert v == "http://www.w3.org/2000/svg"                  # a namespace name, never fetched
    assert not re.findall(r"url\((?!#)", text) and "@import" not in text


def test_prompts_iterations_and_hidden_samples_match_the_trace(runs):
    run = RunDir.open(runs[0])
    trace, res = run.trace(), run.result()
    text = _read(runs[0] / "report.html")
    iters = text.split('<section id="iterations">')[1].split("</section>")[0]
    # each iteration's table lists every candidate, marks the chosen one, and shows its ELBO
    for rec in trace:
        for node, upd in rec.layers.items():
            for c in upd["candidates"]:
                assert report_html.esc(c) in iters
    n_updates = sum(len(rec.layers) for rec in trace)
    assert n_updates >= 2 and iters.count('<tr class="chosen">') == n_updates
    assert iters.count(">chosen</span>") == n_updates
    # hidden samples with their posterior weights, for the first examples of each batch
    hid = text.split('<section id="hidden">')[1].split("</section>")[0]
    recs = [r for r in trace if r.details.get("hidden")]
    assert recs, "the DLN-2 run recorded no hidden samples"
    post = recs[0].details["hidden"]["h"]
    for k, w in enumerate(post["weights"][0]):
        assert f"{w:.4g}" in hid
    assert hid.count("h*</span>") >= len(recs)
    assert "posterior weight" in hid
    # prompts before -> after, the after side a word diff
    prompts = text.split('<section id="prompts">')[1].split("</section>")[0]
    assert report_html.esc(HOSTILE_PROMPT) in prompts
    for node, p in res.prompts.items():
        if p != res.baseline.prompts.get(node):
            assert "<ins>" in prompts


def test_confusion_cost_and_curve_numbers(runs):
    run = RunDir.open(runs[0])
    res = run.result()
    text = _read(runs[0] / "report.html")
    conf = text.split('<section id="confusion">')[1].split("</section>")[0]
    cells = [int(x) for x in re.findall(r'<td class="n" style="[^"]*">(\d+)</td>', conf)]
    n_dev, n_test = len(res.predictions["dev"].ids), len(res.predictions["test"].ids)
    assert len(cells) == 4 * 4 and sum(cells) == 2 * (n_dev + n_test)      # before and after, dev and test
    cost = text.split('<section id="cost">')[1].split("</section>")[0]
    assert f"{res.usage['calls']:,}" in cost and f"{res.tokens:,}" in cost
    assert "not measured (no local backend)" in cost                   # the scripted backend decodes nothing
    curve = text.split('<section id="curve">')[1].split("</section>")[0]
    assert curve.count("<svg") == 3 and "<polyline" in curve and "<rect" in curve
    cal = text.split('<section id="calibration">')[1].split("</section>")[0]
    assert "dev accuracy calibrated" in cal                            # the output layer is calibrated by default


def test_compare_two_runs(runs, tmp_path):
    a, b, _ = runs
    out = tmp_path / "cmp.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    text = _read(out)
    dom = _Dom(text)
    assert {"runs", "accuracy", "curves", "prompts", "cost"} <= set(dom.ids)
    ra, rb = RunDir.open(a).result(), RunDir.open(b).result()
    lo, hi = wilson(ra.test_accuracy, len(ra.predictions["test"].ids))
    assert f"[{lo:.2f}, {hi:.2f}] n={len(ra.predictions['test'].ids)}" in text
    assert "mean over runs of the same network and task" in text
    mean = (ra.test_accuracy + rb.test_accuracy) / 2
    assert f"{mean:.4f}" in text
    assert "seed42" in text and "seed13" in text and dom.tags["script"] == 0


def test_unfinished_run_and_output_to_a_directory(runs, tmp_path, capsys):
    run = tmp_path / "unfinished"
    shutil.copytree(runs[0], run)
    (run / "result.json").unlink()          # as a run killed after its last checkpoint, before the evaluation
    (run / "report.html").unlink()
    assert main(["report", str(run), "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"report: {tmp_path / 'report.html'}\n"
    text = _read(tmp_path / "report.html")
    assert "in progress or interrupted" in text and "not finished" in text
    assert [i for i in _Dom(text).ids if i in SECTIONS] == SECTIONS


def test_errors_are_the_run_directory_codes(runs, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "error[E501]" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["report", str(tmp_path / "plain")]) == 1
    assert "error[E501]" in capsys.readouterr().err          # a directory that never was a run
    damaged = tmp_path / "damaged"
    shutil.copytree(runs[0], damaged)
    (damaged / "report.html").unlink()
    (damaged / "result.json").write_text('{"schema": "dlc/result/v1", "net": ', encoding="utf-8")
    assert main(["report", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert "error[E502]" in err and "result.json" in err and "Traceback" not in err
    assert not (damaged / "report.html").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(runs[0]), "-o", str(tmp_path / "afile" / "r.html")]) == 1
    assert "error[E512]" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_does_not_lose_the_run(tmp_path, monkeypatch, capsys):
    """A full disk at the report: the fit still ends normally with its result and learned network."""
    monkeypatch.setenv("DLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hostile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    (tmp_path / "hostile.dln").write_text(NET, encoding="utf-8")

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_html, "atomic_write_text", full_disk)
    assert main(["fit", "hostile.dln", "--no-progress", "--run-dir", "r", "--set", "fit.iters=1"]) == 0
    out, err = capsys.readouterr()
    assert "warning: the HTML report was not written (error[E512]: cannot write the report" in err
    assert "No space left on device" in err and "`dlc report r` writes it" in err
    assert (tmp_path / "r" / "result.json").is_file() and (tmp_path / "r" / "hostile.fit.dln").is_file()
    assert not (tmp_path / "r" / "report.html").exists() and "report:" not in out


def test_word_diff():
    assert word_diff("a b c", "a b c") == "a b c"
    assert word_diff("Read the sentence.", "Read the whole sentence.") == "Read the <ins>whole </ins>sentence."
    assert word_diff("choose subjective", "pick subjective") == "<del>choose </del><ins>pick </ins>subjective"
    assert word_diff("", "<b>x</b>") == "<ins>&lt;b&gt;x&lt;/b&gt;</ins>"
    assert word_diff("x <i>", "x") == "x<del>&lt;i&gt;</del>"


def test_wilson_interval():
    lo, hi = wilson(0.75, 8)
    assert 0.40 < lo < 0.41 and 0.92 < hi < 0.94        # the textbook values for 6/8: [0.409, 0.929]
    assert wilson(1.0, 10)[1] == 1.0 and wilson(0.0, 10)[0] == 0.0 and wilson(0.0, 10)[1] > 0.25


# ------------------------------------------------------------------------------------------------ a real browser

def _chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("DLC_REQUIRE_BROWSER") == "1":
            pytest.fail("DLC_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium); CI sets DLC_REQUIRE_BROWSER=1")
    return exe


def _browser(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}",
                           *args], capture_output=True, text=True, timeout=180)


def test_a_real_browser_renders_every_section(runs, tmp_path):
    exe = _chromium()
    page = (runs[0] / "report.html").resolve()
    proc = _browser(exe, tmp_path, "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom(proc.stdout)
    assert [i for i in dom.ids if i in SECTIONS] == SECTIONS
    assert dom.tags["script"] == 0 and dom.tags["img"] == 0        # the hostile texts stayed text in the DOM
    assert dom.tags["svg"] == 4                                     # the network and three charts
    assert dom.classes["node"] == 3 and dom.tags["polyline"] >= 1  # input x, layers h and y; curves drawn
    assert "<svg onload=alert(2)><style>body{display:none}</style>" in "".join(dom.text)

    shot = tmp_path / "shot.png"
    proc = _browser(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars",
                    page.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image          # Pillow: a dependency of matplotlib, which the test extra installs

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1400)
    # get_flattened_data replaces getdata (deprecated in Pillow 13); older Pillows only have getdata
    pixels = img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata()
    colours = Counter(pixels)
    assert len(colours) > 50, f"a nearly blank screenshot ({len(colours)} colours)"
    assert colours.most_common(1)[0][1] < 0.8 * img.size[0] * img.size[1]
    assert colours[(0x0F, 0x17, 0x2A)] > 10_000                    # the page header was styled (inline CSS)
    assert colours[(0xDB, 0xEA, 0xFE)] > 1_000                     # a trainable layer's box (inline SVG)
