"""Template references of a layer, resolved for the compiler: built-in names, `file "path.j2"` (read safely: inside
the network's directory tree or $DLC_TEMPLATE_DIRS, a regular file of bounded size) and inline strings, and the
posterior mixture `backward { posterior = {...} }`. Errors are recorded on the compiler's Checker (E301, E303, E323,
E355-E357)."""
from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

from dlc import ir
from dlc.errors import SourceSpan, did_you_mean
from dlc.lang import syntax as S
from dlc.lang import templates as T
from dlc.lang.check import INVALID, Checker

DEFAULT_POSTERIOR = (("prior_answer", 0.5), ("prior", 0.5))   # the paper's best mixture of q_pri+ and q_pri (§3)
DEFAULT_PROMPT_TEMPLATE = "proposal"

TEMPLATE_FILE_MAX = 1 << 20     # bytes: a template file over this is E357 (prompt templates are a few KiB)


@functools.lru_cache(maxsize=64)
def builtin_template(kind: str, name: str) -> ir.TemplateRef:
    path = T.builtin_path(kind, name)
    text = path.read_text(encoding="utf-8")
    return ir.TemplateRef(name=name, kind="builtin", text=text, sha256=T.sha256_text(text), path=str(path))


class Resolved:
    """A resolved template and how to map its Jinja errors back to a file."""

    def __init__(self, ref: ir.TemplateRef, span: SourceSpan, line_offset: int = 0, col_offset: int = 0,
                 parse_path: str | None = None) -> None:
        self.ref, self.span = ref, span
        self.line_offset, self.col_offset, self.parse_path = line_offset, col_offset, parse_path


class TemplateResolver:
    """Resolves the template settings of one program (`path` names it; relative files resolve against base_dir)."""

    def __init__(self, ck: Checker, base_dir: Path, path: str) -> None:
        self.ck, self.base_dir, self.path = ck, base_dir, path

    def err(self, code: str, msg: str, span: SourceSpan | None, **kw: Any) -> Any:
        return self.ck.error(code, msg, span, **kw)

    def posterior(self, v: S.Value | None, layer: str, span: SourceSpan) -> list[tuple[Resolved, float]]:
        """`posterior = { prior_answer: 0.5, prior: 0.5 }` (weights normalised to sum 1), a name, or a list."""
        if v is None:
            return [(Resolved(builtin_template("posterior", n), span), w) for n, w in DEFAULT_POSTERIOR]
        entries: list[tuple[str, SourceSpan, S.Value | None, bool]] = []
        if isinstance(v, S.MapV):
            entries = [(e.key, e.key_span, e.value, False) for e in v.entries]
        elif isinstance(v, S.Ident):
            entries = [(v.name, v.span, None, False)]
        elif isinstance(v, S.ListV) and all(isinstance(i, S.Ident) for i in v.items):
            entries = [(i.name, i.span, None, False) for i in v.items]   # type: ignore[union-attr]
        else:
            self.ck.type_error(v, "a map { template: weight } (or a template name)", "posterior")
            return []
        out: list[tuple[Resolved, float]] = []
        seen: set[str] = set()
        for key, kspan, wv, _ in entries:
            if key in seen:
                self.err("E303", f"posterior template '{key}' is listed twice", kspan, node=layer)
                continue
            seen.add(key)
            weight = 1.0
            if wv is not None:
                w = self.ck.number(wv, f"posterior.{key}", 0.0)
                if w is INVALID:
                    continue
                weight = w
            if key.endswith(".j2"):
                res = self.template_file(S.Str(key, kspan), "posterior", layer)
            elif key in T.builtin_names("posterior"):
                res = Resolved(builtin_template("posterior", key), kspan)
            else:
                self.err("E301", f"unknown posterior template '{key}'", kspan, node=layer,
                         hint=did_you_mean(key, T.builtin_names("posterior"))
                         or f"built-in posteriors: {', '.join(T.builtin_names('posterior'))}; or a \"file.j2\"")
                continue
            if res is not INVALID:
                out.append((res, weight))
        total = sum(w for _, w in out)
        if out and total <= 0:
            self.err("E323", "posterior mixture weights sum to 0", v.span, node=layer,
                     hint="give at least one template a positive weight")
            return []
        if not entries:
            self.err("E323", "the posterior mixture is empty", v.span, node=layer,
                     hint="e.g. posterior = { prior_answer: 0.5, prior: 0.5 }")
        return [(r, w / total) for r, w in out] if total > 0 else out

    def template(self, v: S.Value, kind: str, layer: str, key: str) -> Any:
        """A template reference: a built-in name, `file "path"`, or an inline string."""
        if isinstance(v, S.Ident):
            names = T.builtin_names(kind)
            if v.name not in names:
                return self.err("E301", f"unknown {'' if kind == 'forward' else kind + ' '}template '{v.name}'",
                                v.span, node=layer, hint=did_you_mean(v.name, names)
                                or f"built-in: {', '.join(names)}; or file \"my.j2\", or \"\"\"inline\"\"\"")
            return Resolved(builtin_template(kind, v.name), v.span)
        if isinstance(v, S.FileRef):
            return self.template_file(v.path, kind, layer)
        if isinstance(v, S.Str):
            ref = ir.TemplateRef(name=f"<inline:{layer}.{key}>", kind="inline", text=v.value,
                                 sha256=T.sha256_text(v.value))
            return Resolved(ref, v.span, line_offset=(v.content_line or v.span.line) - 1,
                             col_offset=(v.content_col or v.span.col) - 1, parse_path=self.path)
        return self.ck.type_error(v, 'a template name, file "path.j2" or an inline """string"""', key)

    def template_file(self, s: S.Str, kind: str, layer: str) -> Any:
        """Read `file "path"`: a regular file of at most TEMPLATE_FILE_MAX bytes whose real path (symlinks and `..`
        resolved) is inside the .dln's directory tree or a directory listed in $DLC_TEMPLATE_DIRS (E356, E357).
        Opened without blocking and checked again once open, so a FIFO or a device never hangs or floods compile."""
        p = Path(s.value)
        full = p if p.is_absolute() else self.base_dir / p
        looked = f"looked for {full}; paths are relative to the .dln file"
        try:
            real = full.resolve(strict=True)
        except (OSError, RuntimeError):      # missing, a dangling symlink, a symlink loop, a bad name
            return self.err("E355", f"template file '{s.value}' not found", s.span, node=layer, hint=looked)
        roots = [self.base_dir.resolve()] + [Path(d).expanduser().resolve()
                                             for d in os.environ.get("DLC_TEMPLATE_DIRS", "").split(os.pathsep) if d]
        if not any(real.is_relative_to(r) for r in roots):
            return self.err("E356", f"template file '{s.value}' is outside the network's directory (it is {real})",
                            s.span, node=layer,
                            hint="keep template files in the .dln's directory or below it, or list their directory "
                                 "in $DLC_TEMPLATE_DIRS (separated by ':')")
        fd = -1
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return self.err("E357", f"template file '{s.value}' is not a regular file", s.span, node=layer,
                                hint="a template must be an ordinary text file (not a directory, device or FIFO)")
            data = b""
            while st.st_size <= TEMPLATE_FILE_MAX and len(data) <= TEMPLATE_FILE_MAX:   # (it may grow meanwhile)
                more = os.read(fd, TEMPLATE_FILE_MAX + 1 - len(data))
                if not more:
                    break
                data += more
            if st.st_size > TEMPLATE_FILE_MAX or len(data) > TEMPLATE_FILE_MAX:
                return self.err("E357", f"template file '{s.value}' is larger than {TEMPLATE_FILE_MAX // 1024} KiB",
                                s.span, node=layer, hint="a prompt template is text of a few KiB")
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = "not found" if isinstance(e, FileNotFoundError) else "unreadable"
            return self.err("E355", f"template file '{s.value}' {why}", s.span, node=layer, hint=looked)
        finally:
            if fd >= 0:
                os.close(fd)
        ref = ir.TemplateRef(name=s.value, kind="file", text=text, sha256=T.sha256_text(text), path=str(full))
        return Resolved(ref, s.span, parse_path=str(full))


__all__ = ["TEMPLATE_FILE_MAX", "TemplateResolver", "Resolved", "builtin_template"]
