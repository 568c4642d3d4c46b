"""`dlc data fetch`: download a task's public source files into the data dir, all or nothing.

Files land at the same relative paths as in the shared offline copy (shared/data/README.md), from the pinned
commits listed there; files from pinned commits are checked against their sha256. BIG-bench is fetched from
`main` as the reference's split scripts do (no pinned checksum; the loader's "250 BBH items found" check validates
it). Everything is downloaded into a temporary directory inside the data dir first and moved into place only when
every file of the task arrived intact, so a failed or interrupted fetch leaves no partial files.
`$DLC_DATA_MIRROR` (a base URL, http(s):// or file://, laid out like the data dir) replaces the public URLs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from dlc.data.tasks import BBH, BIGBENCH, GSM8K, LEOPARD, ORDERED_PROMPT, PAPER_TASKS, TASKS
from dlc.errors import DlcDataError

ENV_MIRROR = "DLC_DATA_MIRROR"
RAW = "https://raw.githubusercontent.com"

# local path prefix -> URL prefix (pinned commits from shared/data/README.md)
_ORIGINS: tuple[tuple[str, str], ...] = (
    ("BIG-Bench-Hard/", f"{RAW}/suzgunmirac/BIG-Bench-Hard/9ee07bd481feebf959a6b59d61ea57bdcf30964d/"),
    ("BIG-bench/", f"{RAW}/google/BIG-bench/main/"),
    ("Ordered-Prompt/", f"{RAW}/yaolu/Ordered-Prompt/975d1e2f70ecac895a7ae236ae1962ec748d51b2/"),
    ("leopard/", f"{RAW}/iesl/leopard/024ee5fdd7c1117720336516f0b6047cec6ee8a5/"),
    ("grade-school-math/", f"{RAW}/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/"),
)

SHA256: dict[str, str] = {
    f"{BBH}/date_understanding.json": "0148d4ac5fca05b2f82373e5fef7208e15363b9c6079493034d77b3dab496bf5",
    f"{BBH}/hyperbaton.json": "b6d7f55c75f5d02f2987a4f3123802dfa093872089a56a334144aae8a7264fdc",
    f"{BBH}/logical_deduction_seven_objects.json":
        "2896c7e3482eea318dd37bcc370d24ec3cc91e8374c1784287b5dbd38a529e33",
    f"{BBH}/navigate.json": "b7944dfd3c81da5c4815bd75b00d6fa3c64140823498e78ed496f4c3d36f7f0d",
    f"{ORDERED_PROMPT}/mpqa/dev_subsample.jsonl": "dbb0e3e6637d84b9f2d9d3eef34b391276da3b31b85a8abb53b49ea94510003d",
    f"{ORDERED_PROMPT}/mpqa/test.jsonl": "76bb31c45d3cfa63e14fbe7b912d0172a14971ec5013d0a3eeae75559e8b337c",
    f"{ORDERED_PROMPT}/mpqa/train.jsonl": "1c75f1be0bfc47b979c9d523bdaeb848458534210f264786dc4c3951c36c2a47",
    f"{ORDERED_PROMPT}/subj/dev_subsample.jsonl": "b0c25d6b98d382baf3e74fd0bc29247770c232c23b6309de625317e52794e10e",
    f"{ORDERED_PROMPT}/subj/test.jsonl": "64f4eb9c844f89768fcfc153bd73c5297285c3f1d80caaa95e12f46d6e663a94",
    f"{ORDERED_PROMPT}/subj/train.jsonl": "dcff8bc8f67041b1671cff0370f806a4ff50d036b60e984c47a28e4a7d37d6db",
    f"{ORDERED_PROMPT}/trec/dev_subsample.jsonl": "6547fd1c9a3decc1568e5117990b820c4eebfd567c70285b503ba766a9d00396",
    f"{ORDERED_PROMPT}/trec/test.jsonl": "1dcdbf856b9f0e561c6c75cac4587968f996ea0f83f82d00a0d893639bec389d",
    f"{ORDERED_PROMPT}/trec/train.jsonl": "a0aeddb43e902809a167a198b0731fe83eedb2f8177dccd7fa9113e083e7bd54",
    f"{GSM8K}/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    f"{GSM8K}/train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    f"{LEOPARD}/airline/airline_eval.json": "efc2b1c7e2f29ae5eb3060fec9d080c88ee2346a5fd68e051807e5ccee79a62a",
    f"{LEOPARD}/disaster/disaster_eval.json": "44bc8a4c73644ff210f111149b68bfd650c983e0e3f9b5cac6c98e0c6806cdf0",
}
assert all(k.startswith((BBH, BIGBENCH, ORDERED_PROMPT, LEOPARD, GSM8K)) for k in SHA256)


def url_for(relpath: str, mirror: str | None = None) -> str:
    """The download URL of a data-dir file: under `mirror` if given, else its pinned public source."""
    if mirror:
        return mirror.rstrip("/") + "/" + relpath
    for prefix, base in _ORIGINS:
        if relpath.startswith(prefix):
            return base + relpath[len(prefix):]
    raise AssertionError(f"no source for {relpath}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_present(root: Path, relpath: str) -> bool:
    """The file exists and, when its checksum is pinned, matches it."""
    p = root / relpath
    return p.is_file() and (relpath not in SHA256 or _sha256(p) == SHA256[relpath])


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
    except urllib.error.HTTPError as e:
        raise DlcDataError(f"download failed: {url} answered HTTP {e.code}", code="E809",
                           hint="the source may have moved; copy the files into the data dir by hand "
                                "(layout: shared/data/README.md)") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise DlcDataError(f"cannot download {url}: {reason}", code="E809",
                           hint="check your internet connection, or copy the files into the data dir by hand "
                                f"(or set ${ENV_MIRROR} to a local mirror)") from e


def fetch(task: str, root: Path, *, mirror: str | None = None, force: bool = False, timeout: float = 60.0,
          log: Callable[[str], None] | None = None) -> list[str]:
    """Download the files of `task` ("all" = every paper task) into `root`; returns the paths fetched.

    Files already present (and matching their checksum) are skipped unless `force`. On any failure nothing of
    this call is left behind (the temporary directory is removed) and a DlcDataError (E809/E810) is raised.
    """
    if task == "all":
        names: tuple[str, ...] = PAPER_TASKS
    elif task in TASKS:
        if TASKS[task].kind == "generated":
            raise DlcDataError(f"'{task}' is generated on the fly and has no files to fetch", code="E824",
                               hint="use it directly: data { task = \"" + task + "\" }")
        names = (task,)
    else:
        from dlc.data.loader import unknown_task

        raise unknown_task(task)
    mirror = mirror if mirror is not None else os.environ.get(ENV_MIRROR) or None
    wanted = list(dict.fromkeys(f for t in names for f in TASKS[t].files))
    todo = [f for f in wanted if force or not is_present(root, f)]
    if not todo:
        return []
    created = next((d for d in reversed((root, *root.parents)) if not d.exists()), None)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dlc-fetch-", dir=root))
    except OSError as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        why = "is not a directory" if root.exists() and not root.is_dir() else f"cannot be written ({e.strerror or e})"
        raise DlcDataError(f"data directory {root} {why}", code="E801",
                           hint="pass --data-dir a writable directory (or set $DLC_DATA_DIR)") from None
    ok = False
    try:
        for rel in todo:
            url = url_for(rel, mirror)
            if log:
                log(f"downloading {url}")
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download(url, dest, timeout)
            expected = SHA256.get(rel)
            if expected is not None and _sha256(dest) != expected:
                raise DlcDataError(f"checksum mismatch for {url}", code="E810",
                                   hint="the download is corrupt or the source changed; try again, or copy the "
                                        "file by hand")
        for rel in todo:
            final = root / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, final)
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok and created is not None:
            # leave the file system as we found it: remove the (now empty) directories this call created
            for d in (root, *root.parents):
                try:
                    d.rmdir()
                except OSError:
                    break
                if d == created:
                    break
    return todo
