"""``--outputs json,csv,png,html``: which kinds of file ``run``, ``sweep`` and ``plan`` write.

Every command knows the four kinds (the files of each are listed in the
command's ``FILES``); the default is the files each command always wrote plus
``report.html``. An unknown kind, or an empty list, is a one-line error.
"""
from __future__ import annotations

from kvsim.errors import KvsimError

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
