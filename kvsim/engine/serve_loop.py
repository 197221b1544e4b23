"""The engine's serving loop: arrivals, then per iteration schedule, prepare, run, complete; optionally with the
host's work on the next step overlapped with the GPU's on this one (``runtime.async_scheduling``).

Stepped one at a time, an iteration is host work (scheduling, input preparation), then the GPU's (launch to
the draws read back), then host bookkeeping; the host parts (0.2-0.5 ms a step on the lent H200 VMs) move from
run to run with the host's speed by up to 1.7× (``benchmarks/engine/results_H200/serving_1605/README.md``).

Overlapped (``async_scheduling: true``), a step is launched and, while the GPU runs it, the scheduler
completes it ahead of its tokens (its counts do not depend on the tokens drawn), schedules and prepares the
next step; the next step's input ids that the step in flight is still drawing are filled in when it lands
(:meth:`kvsim.engine.runner.ModelRunner.collect`). What the scheduler decides is what it decides stepped,
provided nothing arrives while the step is in flight: a step overlaps only when the next arrival is due after
it (its predicted end: 1.5× the last decode step's time, or for a step with prompt tokens the last such
step's, scaled up to this one's tokens); an arrival that still comes in that window joins one step late and
is counted (``arrivals_deferred`` in the engine info). Steps with prompt tokens (prefill, mixed) fly as
decode steps do (``runtime.async_prompt_steps``, default true; false: only decode-only steps, the engine of
2026-12-06, whose mixed steps kept 0.4-0.5 ms of host work on the critical path and made the decode step
after them wait for its scheduling, ``validation/H100-async`` at commit 8199515). Steps with beam search (their parents decide
the next step) and tensor-parallel runs are stepped; in a closed loop (``workload.max_concurrency``) a step
that finishes a request lands before the next one is scheduled, since the request taking its slot is sent
when it lands. First-token and finish times are those of the step's landing (when its draws are on the
host), as stepped.

Records: each iteration starts where the previous one ended (or at its own scheduling after an idle wait),
so iterations tile the wall clock; the state a record keeps (batch, queues, blocks, memory) is read once the step
is queued on the GPU, under its GPU time, not on the critical path (before 2026-12-06 20:40 it was read before
the launch and left a 0.02-0.07 ms gap between stepped steps that the records did not count); ``cpu_s`` is the
host time on the critical path (from that start to the launch, plus the bookkeeping after the draws), ``gpu_s``
the launch to the draws on the host; ``host_thread_s`` and ``host_cpu`` are the serving thread's CPU time over
``cpu_s``'s spans and its core (:mod:`kvsim.engine.host_probe`); ``host_ahead`` is 1 for a step scheduled and prepared while the step before it was in flight (its host work off
the critical path: the calibration's serving fit prices such steps and the others apart,
:func:`kvsim.calibrate.serving_fit.fit_from_runs`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


from kvsim.engine.host_probe import current_cpu, host_summary
from kvsim.overlap import OVERLAP_MARGIN   # (a step overlaps if the next arrival is due after 1.5x its
#                                            predicted time; the simulator's mirror of this rule reads it there too)
from kvsim.records import IterationLog, step_state
from kvsim.workload.closed_loop import make_gate, send_freed

# An idle engine sleeps until the next arrival, then spins through the last WAKE_SPIN_S of the wait: a plain
# sleep overshot by 0.04-0.44 ms on the lent VMs (idle wakes measured by the calibration and in validation runs,
# 2026-12-07), varying from run to run; spun, the wake is the loop's own work: 0.055 ms in the calibration and
# 0.04-0.11 ms in validation runs on an H100 (validation/H100-async-opt-1207f; 0.18-0.44 ms slept).
WAKE_SPIN_S = 1e-3


def sleep_until(clock, t: float, spin: float | None = None) -> None:
    """Return once ``clock()`` reaches ``t``: sleep to ``spin`` (default :data:`WAKE_SPIN_S`) before it, then poll
    (no earlier than ``t``)."""
    if spin is None:
        spin = WAKE_SPIN_S
    left = t - clock()
    if left > spin:
        time.sleep(left - spin)
    while clock() < t:
        pass


@dataclass
class _Flight:
    """A launched decode step the scheduler has completed ahead of its tokens."""
    inflight: object
    start: float              # its record's start
    launched: float
    state: tuple
    finished: list            # groups it finishes (their finish time is set when it lands)
    firsts: list              # groups whose first token it draws (their first-token time is set when it lands)
    prompt: int               # its prompt tokens (0: a decode-only step)
    cpu: float                # host time on the critical path before the launch
    thread: float = 0.0       # the serving thread's CPU time within ``cpu`` (kvsim.engine.host_probe)
    core: int = -1            # the core it ran on when the state was recorded
    ahead: bool = False       # scheduled and prepared while the step before it was in flight
    scheduled_next: list = field(default_factory=list)   # groups first scheduled by the next step, meanwhile


@dataclass
class LoopResult:
    log: IterationLog
    cpu_s: list
    gpu_s: list
    outputs: dict
    end_s: float
    info: dict
    thread_s: list = field(default_factory=list)   # host_thread_s per step (kvsim.engine.host_probe)
    cores: list = field(default_factory=list)      # host_cpu per step
    ahead: list = field(default_factory=list)      # host_ahead per step: prepared while the one before flew


def serve(eng, clog) -> LoopResult:
    """Run ``eng`` (a :class:`kvsim.engine.engine.RealEngine`) over its workload (see module doc)."""
    sched, runner, log = eng.sched, eng.runner, IterationLog()
    specs = eng.setup.requests
    cpu_s, gpu_s = [], []
    thread_s, cores, aheads = [], [], []    # host_thread_s, host_cpu (kvsim.engine.host_probe), host_ahead
    thread = time.thread_time
    outputs: dict[int, list[list[int]]] = {}
    sc = eng.sc
    max_wall = sc.runtime.max_wall_s
    i, n = 0, len(specs)
    gate = make_gate(sc.workload.max_concurrency)
    overlap = bool(getattr(sc.runtime, "async_scheduling", False)) and runner.tp is None \
        and not any(r.beam_width > 1 for r in specs)
    prompt_overlap = overlap and bool(getattr(sc.runtime, "async_prompt_steps", False))
    deferred = overlapped = 0
    last_decode = 0.0           # the last decode-only step's launch-to-landing time (the overlap's prediction)
    last_prompt = (0.0, 1)      # ... and the last step with prompt tokens': (time, its prompt tokens)
    last_end = float("-inf")    # where the last recorded iteration ended
    flight: _Flight | None = None
    t0 = time.perf_counter()
    t0_unix = time.time()       # the wall clock at start_s = 0: lines the steps up with outside logs (GPU clocks)
    clock = lambda: time.perf_counter() - t0   # noqa: E731

    def record(state, start, launched, device_end, end, host_before, thread_before=0.0, core=-1,
               thread_after=0.0, ahead=False):
        nonlocal last_end
        log.append_step(start, end - start, 0.0, state)
        cpu_s.append(host_before + (end - device_end))
        gpu_s.append(device_end - launched)
        thread_s.append(thread_before + thread_after)
        cores.append(core)
        aheads.append(int(ahead))
        last_end = end

    def observe(plan):
        """The step's state for its record, and the core the serving thread is on: instrumentation, read once
        the step is queued on the GPU so that it runs under the step's GPU time (read before the launch, it
        added 0.02-0.07 ms a stepped step on the lent machines, time a server without records does not spend)."""
        return step_state(plan, sched), current_cpu()

    def predicted_prompt(tokens: int) -> float:
        """A step with ``tokens`` prompt tokens: the last such step's time scaled up to them, at least the last
        decode step's (0 until one has been timed: this one is then stepped)."""
        took, then = last_prompt
        return max(last_decode, took * max(1.0, tokens / then)) if took > 0 else 0.0

    def finished(groups, t):
        for g in groups:
            # a v1 child request adds its sample to its request's (in finish order)
            outputs.setdefault(g.spec.request_id, []).extend(runner.outputs(g))
            runner.release(g)
        if gate is not None:                # freed slots are taken at the finish, as in the simulator
            send_freed(gate, sched, t)

    def land(f: _Flight, since: float = float("inf")) -> None:
        """Wait for the step in flight; stamp what it finished with its landing time; record it. Arrivals due
        after ``since`` (when the next step was scheduled) and before the landing join a step late."""
        nonlocal deferred, last_decode, last_prompt
        runner.collect(f.inflight)
        eng._sync()
        device_end = clock()
        th_end = thread()
        if f.prompt:
            last_prompt = (device_end - f.launched, f.prompt)
        else:
            last_decode = device_end - f.launched
        for g in f.firsts:
            g.first_token_s = device_end
        for g in f.finished:
            g.finish_s = device_end
        for g in f.scheduled_next:
            g.first_scheduled_s = device_end
        j = i
        while j < n and specs[j].arrival_s <= device_end:    # due while it flew: they join a step late
            deferred += specs[j].arrival_s > since
            j += 1
        finished(f.finished, device_end)
        record(f.state, f.start, f.launched, device_end, clock(), f.cpu, f.thread, f.core, thread() - th_end,
               f.ahead)

    with clog:            # kernels compiled on the clock: none expected after warm-up
        while True:
            now = clock()
            while i < n and specs[i].arrival_s <= now:
                for spec in ([specs[i]] if gate is None else gate.arrive(specs[i], now)):
                    sched.add_request(spec)
                i += 1
            if gate is not None:
                send_freed(gate, sched, now)
            if max_wall is not None and now >= max_wall:
                break
            if not sched.has_unfinished:
                if flight is not None:
                    land(flight)
                    flight = None
                    continue
                if i >= n:
                    break
                sleep_until(clock, specs[i].arrival_s)
                last_end = float("-inf")
                continue
            start = clock()
            th_start = thread()
            plan = sched.schedule(start)
            batch = runner.prepare(plan)
            th_rec = th_start               # the thread's clock where this step's record starts
            ahead = flight is not None      # this step's host work ran while the one before it was on the GPU
            if flight is not None:         # first scheduled by this step: as stepped, once the one in flight landed
                flight.scheduled_next = [g for g in sched.running if g.first_scheduled_s == start]
                land(flight, start)
                flight = None
                th_rec = thread()
            rec_start = max(start, last_end)
            host_before = max(0.0, clock() - rec_start)
            clog.step = len(cpu_s)
            launched = clock()
            th_before = max(0.0, thread() - th_rec)
            prompt = plan.num_prefill_tokens
            decode_only = prompt == 0 and bool(plan.decode_group_ids)
            due = specs[i].arrival_s if i < n else float("inf")
            ahead_s = last_decode if decode_only else predicted_prompt(prompt) if prompt and prompt_overlap else 0.0
            if overlap and ahead_s > 0 and due > launched + OVERLAP_MARGIN * ahead_s:
                inflight = runner.launch(plan, batch)
                state, core = observe(plan)                       # while the GPU runs it
                done = sched.complete_step(plan, launched, {})    # counts only; times set when it lands
                firsts = [g for g in map(sched.groups.__getitem__, plan.prefill_group_ids)
                          if g.first_token_s == launched] if prompt else []
                flight = _Flight(inflight, rec_start, launched, state, list(done), firsts, prompt, host_before,
                                 th_before, core, ahead)
                if gate is not None and done:   # a closed loop sends a finished request's successor when its step
                    land(flight)                # lands, as stepped (its arrival time is the landing)
                    flight = None
                else:
                    overlapped += 1
                continue
            seen = []
            parents = runner.execute(plan, batch, meanwhile=lambda: seen.append(observe(plan)))
            state, core = seen[0]
            eng._sync()
            device_end = clock()
            th_end = thread()
            if decode_only:
                last_decode = device_end - launched
            elif prompt:
                last_prompt = (device_end - launched, prompt)
            done = sched.complete_step(plan, device_end, parents)
            finished(done, device_end)
            record(state, rec_start, launched, device_end, clock(), host_before, th_before, core,
                   thread() - th_end, ahead)
        if flight is not None:               # stopped by max_wall_s with a step in flight
            land(flight)
    info = {"async_scheduling": overlap, "steps_overlapped": overlapped, "arrivals_deferred": deferred,
            "serve_start_unix": round(t0_unix, 3), **host_summary(cpu_s, thread_s, cores)}
    return LoopResult(log, cpu_s, gpu_s, outputs, clock(), info, thread_s, cores, aheads)
