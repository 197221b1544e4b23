"""``kvsim`` command lines run in-process by tests: exit code, stdout and stderr."""
from __future__ import annotations

from kvsim.cli import main


def cli(capsys, *args):
    """Run ``kvsim ARGS``; return ``(rc, out, err)`` (a SystemExit's code counts as the exit code)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err
