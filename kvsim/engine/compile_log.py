"""Triton kernels compiled while the engine serves: none are expected after warm-up (:mod:`kvsim.engine.warmup`).

A kernel variant first met in the middle of a run compiles inside a timed step: on the H200 one such step of a
static batch took 0.6 s against 0.07 s for its neighbours. :class:`CompileLog` installs Triton's post-compile
hook around the serving loop and records each compile with the step it fell in, so an engine run says so itself
(``summary.json``'s ``kernels_compiled_while_serving``, and a note from ``kvsim engine``) instead of leaving it
to be found in the step times. It chains to a hook already installed and restores it after; without Triton's
hook API it records nothing.
"""
from __future__ import annotations

MAX_EVENTS = 50      # kept in the run's info (the count is always whole)
SPEC_CHARS = 300     # of Triton's description of the compiled specialisation


def _runtime_knobs():
    try:
        import triton
    except ImportError:
        return None
    knobs = getattr(getattr(triton, "knobs", None), "runtime", None)
    return knobs if knobs is not None and hasattr(knobs, "jit_post_compile_hook") else None


class CompileLog:
    """Context manager: Triton compiles inside the block, each with the current :attr:`step`."""

    def __init__(self):
        self.step = -1
        self.count = 0
        self.events: list[dict] = []
        self._knobs = None
        self._prev = None

    def _hook(self, *args, **kwargs):
        self.count += 1
        if len(self.events) < MAX_EVENTS:
            fn = kwargs.get("fn")
            self.events.append({"step": self.step, "kernel": str(getattr(fn, "name", fn)),
                                "spec": str(kwargs.get("repr", ""))[:SPEC_CHARS]})
        return self._prev(*args, **kwargs) if self._prev is not None else None

    def __enter__(self) -> "CompileLog":
        self._knobs = _runtime_knobs()
        if self._knobs is not None:
            self._prev = self._knobs.jit_post_compile_hook
            self._knobs.jit_post_compile_hook = self._hook
        return self

    def __exit__(self, *exc) -> None:
        if self._knobs is not None:
            self._knobs.jit_post_compile_hook = self._prev

    def info(self) -> dict:
        """What the run's info records: the count and the first :data:`MAX_EVENTS` compiles."""
        return {"kernels_compiled_while_serving": self.count, "kernels_compiled_while_serving_first": self.events}
