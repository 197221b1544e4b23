"""Where an engine step's host time goes when it moves: thread CPU time and the CPU core, per step.

The host part of a step (``cpu_s``: scheduling, input preparation, bookkeeping after the draws) moved between
0.23 and 0.54 ms at the same batch on one lent H200 VM, in steps within one run rather than with the load
(``validation/H200-1206/README.md`` at commit 040af3a). Two readings tell the candidate causes apart:

* ``host_thread_s``: the serving thread's CPU time (``time.thread_time``) over the same spans as ``cpu_s``.
  ``cpu_s - host_thread_s`` is time the thread was runnable or blocked but not running (preempted by another
  thread or tenant, stolen by the hypervisor); equal readings with a larger ``cpu_s`` mean the same work ran
  slower (clock, caches, a core shared with a hyperthread).
* ``host_cpu``: the core the thread ran on when the step's state was recorded (Linux: field 39 of
  ``/proc/thread-self/stat``; -1 elsewhere), so a slow stretch can be lined up with a migration.

Both are instrumentation: the core is read inside the state-recording span that ``cpu_s`` leaves out, and the
thread clock costs about a microsecond a reading.
"""
from __future__ import annotations

import numpy as np

_STAT = "/proc/thread-self/stat"


def current_cpu() -> int:
    """The core this thread is running on (Linux), -1 where that cannot be read."""
    try:
        with open(_STAT, "rb") as f:
            raw = f.read()
        return int(raw[raw.rindex(b")") + 2:].split()[36])      # field 39; fields 3.. follow the ")" of comm
    except (OSError, ValueError, IndexError):
        return -1


def host_summary(cpu_s, thread_s, cores) -> dict:
    """Run-level readings for the engine's info: the thread's share of the host time, how often the serving
    thread changed cores between steps, and on how many it ran (empty where nothing was recorded)."""
    cpu, thr, core = (np.asarray(x, dtype=float) for x in (cpu_s, thread_s, cores))
    if not len(cpu) or len(thr) != len(cpu) or len(core) != len(cpu):
        return {}
    known = core[core >= 0]
    return {"host_thread_share": round(float(thr.sum() / cpu.sum()), 4) if cpu.sum() > 0 else None,
            "host_cpu_changes": int((np.diff(known) != 0).sum()) if len(known) > 1 else 0,
            "host_cpus": int(len(np.unique(known)))}
