"""Where outputs go and how they are written: only under ``--out``, atomically.

* :func:`safe_name` turns a scenario name into one path component, so a name
  like ``../../x`` or ``/etc`` cannot lead a default output folder
  (``runs/<name>``) anywhere else.
* :func:`atomic_write` writes a file under a temporary name in the same folder
  and renames it into place: a reader sees the old file or the new one, never a
  half-written one.
* :class:`OutputSet` writes a command's whole set of files into a temporary
  sibling folder and then swaps it in for ``--out``: an interrupted run leaves
  the old complete set (or nothing), and a re-run replaces the set as a whole,
  with no stale files mixed in. To be safe against ``--out .`` or ``--out ~``,
  an existing folder is only replaced when everything in it is a file this
  command writes; otherwise it is a one-line error.
* :func:`finite_json` is the JSON text of a document with non-finite floats
  written as ``null`` (JSON has no NaN or Infinity).
* ``--outputs json,csv,png,html`` (:func:`parse_outputs`) picks which kinds of
  file ``run``, ``sweep`` and ``plan`` write; each command lists its files per
  kind, and its default is the files it always wrote plus ``report.html``.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

from kvsim.errors import KvsimError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str, default: str = "scenario") -> str:
    """One path component made of ``[A-Za-z0-9._+-]``, not starting with a dot, at most 100 characters."""
    s = _UNSAFE.sub("_", str(name)).strip("._")[:100]
    return s or default


def default_out(name: str, suffix: str = "") -> Path:
    """``runs/<safe name><suffix>``: the default output folder of a command."""
    return Path("runs") / (safe_name(name) + suffix)


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write(path, write) -> None:
    """``write(tmp_path)`` to a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise KvsimError("--out", f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _finite(obj):
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):        # numpy scalars
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return obj
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def finite_json(doc, **kw) -> str:
    """JSON text of ``doc`` with NaN/Infinity as null; always valid JSON."""
    return json.dumps(_finite(doc), allow_nan=False, **kw) + "\n"


def write_text(path, text: str) -> None:
    atomic_write(path, lambda t: Path(t).write_text(text, encoding="utf-8"))


def write_json(path, doc, **kw) -> None:
    write_text(path, finite_json(doc, **kw))


def write_csv(path, df) -> None:
    atomic_write(path, lambda t: df.to_csv(t, index=False))


def _check_creatable(out: Path) -> None:
    """A KvsimError unless a folder can be made where ``out`` will go: its nearest existing ancestor is a folder
    that takes a new entry (tried with a temporary folder, removed at once)."""
    import tempfile
    base = out.absolute().parent
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        if not base.is_dir():
            raise NotADirectoryError(20, "not a folder", str(base))
        os.rmdir(tempfile.mkdtemp(prefix=".kvsim-probe-", dir=base))
    except OSError as e:
        raise KvsimError("--out", f"cannot create {out}: {e.strerror or e}") from None


class OutputSet:
    """``with OutputSet(out, owns) as d: ...write files into d...`` — then ``d`` replaces ``out`` (module doc).

    ``owns(name) -> bool`` says which file names in an existing ``out`` are this
    command's (a set of names or of suffixes such as ``{".csv", ".png"}``).
    """

    def __init__(self, out, owns):
        self.out = Path(out)
        self.owns = owns if callable(owns) else (lambda n, s=frozenset(owns): n in s or Path(n).suffix in s)
        self.tmp: Path | None = None

    def check(self) -> None:
        """Refuse an ``out`` that is a file or holds files this command does not own (one-line KvsimError);
        commands call it before their work, so a foreign --out fails at once, not after minutes."""
        out = self.out
        try:
            present = out.exists() or out.is_symlink()
        except OSError as e:            # e.g. a name longer than the file system allows
            raise KvsimError("--out", f"cannot use {str(out)[:60]}{'...' if len(str(out)) > 60 else ''}: "
                                      f"{e.strerror or e}") from None
        if not present:                 # the nearest folder that exists must take a new folder (before the work)
            _check_creatable(out)
            return
        if not out.is_dir():
            raise KvsimError("--out", f"{out} exists and is not a folder")
        try:
            foreign = sorted(p.name for p in out.iterdir() if not (p.is_file() and self.owns(p.name)))
        except OSError as e:
            raise KvsimError("--out", f"cannot read {out}: {e.strerror or e}") from None
        if foreign:
            raise KvsimError("--out", f"{out} holds other files ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}); kvsim replaces an output folder as a "
                             f"whole, so give a new or empty folder")

    def __enter__(self) -> Path:
        self.check()
        parent = self.out.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.tmp = _tmp_sibling(self.out.absolute(), "new")
            self.tmp.mkdir()
        except OSError as e:
            raise KvsimError("--out", f"cannot create {self.out}: {e.strerror or e}") from None
        return self.tmp

    def __exit__(self, kind, value, tb) -> bool:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(value, OSError):
                raise KvsimError("--out", f"cannot write into {self.out}: {value.strerror or value}") from None
            return False
        out = self.out.absolute()
        old = None
        try:
            self.check()                              # still ours (nobody wrote there meanwhile)
            if out.exists():
                old = _tmp_sibling(out, "old")
                os.rename(out, old)
            os.rename(self.tmp, out)
        except OSError as e:
            if old is not None and not out.exists():
                os.rename(old, out)                    # put the old set back
                old = None
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise KvsimError("--out", f"cannot replace {self.out}: {e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


# ------------------------------------------------------------------ --outputs
KINDS = ("json", "csv", "png", "html")


def parse_outputs(raw: str | None, default: tuple[str, ...]) -> frozenset[str]:
    """``"json,csv,html"`` -> frozenset of kinds; ``None`` -> ``default``."""
    if raw is None:
        return frozenset(default)
    parts = [p.strip().lower() for p in str(raw).split(",")]
    bad = [p for p in parts if p not in KINDS]
    if not parts or bad:
        raise KvsimError("--outputs", f"got {raw!r}, expected a comma-separated list of {', '.join(KINDS)}")
    return frozenset(parts)


def files_for(kinds: frozenset[str], files: dict[str, tuple[str, ...]]) -> list[str]:
    """The file names of the chosen kinds, in the order of ``files``."""
    return [f for kind, names in files.items() if kind in kinds for f in names]


def add_outputs_arg(p, default: tuple[str, ...]) -> None:
    p.add_argument("--outputs", default=None, metavar="KINDS",
                   help=f"files to write: comma-separated {', '.join(KINDS)} (default {','.join(default)}; "
                        "html is one self-contained report.html)")
