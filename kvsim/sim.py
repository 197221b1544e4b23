"""The SimPy model: an arrival process and an engine loop that prices each StepPlan.

The engine loop is the same loop a real engine runs, with time simulated::

    plan = scheduler.schedule(env.now)
    yield host_link (swap transfers), then yield env.timeout(cost.step_time(plan))
    scheduler.complete_step(plan, env.now)

Arrivals fire with URGENT priority, so a request arriving exactly when a step
ends is visible to the next ``schedule``. Runs of decode-only iterations in
which no group is admitted or swapped in and every block need is covered are
fast-forwarded, through the finishes inside them (:mod:`kvsim.fastforward`), and
the step that preempts where such a run stops short of memory, or (chunked
prefill) decodes it beside the groups admitted, is taken from the run
(:mod:`kvsim.run_step`); beam search's decode steps between admissions and finishes are taken without a plan
each (:mod:`kvsim.beam_forward`); results are identical to stepping.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy
from simpy.core import URGENT

from kvsim.beam_forward import beam_forward
from kvsim.build import RunSetup, setup_run
from kvsim.config import Scenario
from kvsim.core.beam_run import prompt_only
from kvsim.core.plan import StepPlan
from kvsim.core.run_split import admitting_split
from kvsim.core.scheduler import Scheduler
from kvsim.fastforward import fast_forward
from kvsim.iterstats import IterationStats
from kvsim.metrics import SUMMARY_INPUTS
from kvsim.overlap import steps_ahead
from kvsim.queue_thirds import QueueThirds, rate_driven
from kvsim.run_step import mixed_step_from_run, step_from_run
from kvsim.records import IterationLog, request_frame, run_summary, step_state
from kvsim.request_table import RequestTable
from kvsim.workload.closed_loop import make_gate, send_freed


YOUNG_OBJECTS = 100_000     # the cycle collector's first threshold while a run steps (Python's default: 700)
# rows per chunk the summary reads (any chunking gives the same bits: kvsim.pairwise); each chunk's dozens of
# temporary columns stay in cache and in memory the process already holds: 2**16 rows (IterationLog's default
# chunk) took ~0.11 s for a 10k-request paged run's 375k iterations, 2**14 ~0.06 s
SUMMARY_CHUNK_ROWS = 1 << 14


@contextmanager
def _fewer_collections():
    """Raise the cycle collector's first threshold for a run's stepping, then put it back. A run allocates and
    frees many small objects (plans, tuples, segments) but makes almost no reference cycles, so most collector
    passes find nothing; with the default threshold they cost a paged run a few percent. Cycles are still
    collected, only later; outputs do not depend on it."""
    t0, t1, t2 = gc.get_threshold()
    gc.set_threshold(max(t0, YOUNG_OBJECTS), t1, t2)
    try:
        yield
    finally:
        gc.set_threshold(t0, t1, t2)


class _UrgentTimeout(simpy.events.Event):
    """A timeout that fires before NORMAL events scheduled for the same instant."""

    def __init__(self, env: simpy.Environment, delay: float):
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, URGENT, delay)


@dataclass
class SimResult:
    """A run's records and summary. ``iterations`` is built from the run's log the first time it is read
    (``log``: the :class:`~kvsim.iterlog.IterationLog`, which can also hand it out in chunks).
    ``queue_thirds``: :func:`kvsim.report.run_report.waiting_thirds`' values, gathered in the summary's pass
    over the log where asked and the run offers a rate (:mod:`kvsim.queue_thirds`), else None."""
    setup: RunSetup
    requests: pd.DataFrame
    _iterations: pd.DataFrame | None
    end_s: float
    summary: dict
    log: IterationLog | None = field(default=None, repr=False)
    queue_thirds: tuple[float, float] | None = None    # the overload verdict's queue averages, where gathered

    @property
    def iterations(self) -> pd.DataFrame:
        if self._iterations is None:
            self._iterations = self.log.frame()
        return self._iterations

    @iterations.setter
    def iterations(self, frame: pd.DataFrame) -> None:
        self._iterations = frame


class SimEngine:
    """Drives one scheduler with simulated time. ``run()`` returns a :class:`SimResult`."""

    TAKE_EVERY = 2048          # finished/rejected groups recorded into the request table at a time

    def __init__(self, setup: RunSetup, *, fast_forward: bool = True):
        self.setup = setup
        sc = setup.scenario
        self.env = simpy.Environment()
        self.host_link = simpy.Resource(self.env, capacity=1)
        self.kv = setup.make_kv()
        self.sched: Scheduler = setup.make_scheduler(self.kv, np.random.default_rng([sc.seed, 2]))
        self.cost = setup.cost
        self.sched.count_sampling = bool(getattr(self.cost, "prices_sampling", False))   # beam steps' StepPlan counts
        self.max_time_s = sc.max_time_s
        self.fast_forward = fast_forward
        self.log = IterationLog(self.cost)
        self.inbox: list = []
        self._next_arrival_s = float("inf")  # exact event time of the next scheduled arrival
        self.gate = make_gate(sc.workload.max_concurrency)    # closed loop (max_concurrency), else None
        self.arrivals_done = False
        self._wake: simpy.Event | None = None
        # which prompt steps the engine prepares while the step before flies (None: no price depends on it)
        self.overlap = steps_ahead(setup, self.cost)
        self.ff_steps = 0
        self.beam_steps = 0              # beam search steps taken by beam runs (kvsim.beam_forward)
        self.beam_kept = None            # the beam run the last steps left as it was (kvsim.beam_forward)
        self.ff_blocked = False          # skip the next fast-forward try (kvsim.fastforward._advance says)
        self._chunked = self.sched.cfg.policy == "chunked"      # (admitting steps taken from a kept run: chunked)
        # finished groups become rows of plain numbers as they end (the V1 scheduler reads children per request)
        self.table = RequestTable() if type(self.sched).request_groups is Scheduler.request_groups else None

    @property
    def next_arrival_s(self) -> float:
        """When the next request can join the scheduler: its scheduled arrival, or never while every
        closed-loop slot is taken (slots free only when a request finishes, which ends a decode run)."""
        if self.gate is not None and self.gate.full:
            return float("inf")
        return self._next_arrival_s

    # ------------------------------------------------------------- processes
    def _arrivals(self):
        env, gate = self.env, self.gate
        for spec in self.setup.requests:
            delay = max(0.0, spec.arrival_s - env.now)
            self._next_arrival_s = env.now + delay
            yield _UrgentTimeout(env, delay)
            if gate is None:
                self.inbox.append((env.now, spec))
            else:
                self.inbox.extend((env.now, s) for s in gate.arrive(spec, env.now))
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()
        self._next_arrival_s = float("inf")
        self.arrivals_done = True
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _engine(self):
        env, sched, cost = self.env, self.sched, self.cost
        woke = False
        while True:
            kept, self.beam_kept = self.beam_kept, None     # (valid only for the step right after its run's)
            if self.inbox:
                for _, spec in self.inbox:
                    sched.add_request(spec)
                self.inbox.clear()
            if self.gate is not None:
                send_freed(self.gate, self.sched, self.env.now)
            table = self.table
            if table is not None and len(sched.finished) + len(sched.rejected) - table.taken >= self.TAKE_EVERY:
                table.take_done(sched)
            if self.max_time_s is not None and env.now >= self.max_time_s:
                return
            if not sched.has_unfinished:
                if self.arrivals_done:
                    return
                self._wake = env.event()
                yield self._wake
                self._wake = None
                woke = True       # the next step is the first after idle: it pays cost.wake_time
                if self.inbox and cost.wake_latency_s > 0.0:
                    # the engine schedules once it has woken: what arrives meanwhile joins the step
                    yield env.timeout(cost.wake_latency_s)
                continue
            if self.ff_blocked:
                self.ff_blocked = False         # (the last run ended short of memory: this step preempts)
            elif self.fast_forward and not woke:
                ff = fast_forward(self)
                if ff is None and sched.serves_beams:
                    ff = beam_forward(self, kept)
                if ff is not None:
                    yield from ff
                    continue
            if self.fast_forward and not woke:
                # a decode step taken from the kept run where it may be; where the waiting head is admitted
                # next, only the chunked step that decodes the run beside it
                if not sched._admits_next:
                    step = step_from_run(self)
                else:
                    step = mixed_step_from_run(self) if self._chunked else None
                if step is not None:
                    yield from step
                    continue
            plan = sched.schedule(env.now)
            if plan.is_empty:
                raise RuntimeError(f"scheduler stalled at t={env.now}: "
                                   f"{len(sched.waiting)} waiting, {len(sched.swapped)} swapped")
            swap_s = self._swap_time(plan)
            dt = cost.step_time(plan) + (cost.wake_time(plan) if woke else 0.0)
            woke = False
            ov = self.overlap
            if ov is not None:      # a prompt step prepared ahead: its host work off the critical path; a decode
                prompt = bool(plan.prefill_new_tokens)      # step that was not: its host work on it
                if prompt:
                    if ov.prompt_priced and not plan.decode_context_tokens and ov.ahead(env.now):
                        dt = max(0.0, dt - cost.prompt_host_s(plan))
                elif ov.decode_priced and plan.decode_context_tokens and not ov.ahead(env.now):
                    dt += cost.decode_host_s(len(plan.decode_context_tokens))
                ov.started(env.now, prompt)
            self._record(plan, env.now, dt, swap_s)
            if swap_s > 0:
                with self.host_link.request() as req:
                    yield req
                    yield env.timeout(swap_s)
            yield env.timeout(dt)
            sched.complete_step(plan, env.now)
            if kept is not None and prompt_only(plan):
                self.beam_kept = kept           # (its groups as it left them: beam_run.BeamRun.take_up)

    def _swap_time(self, plan: StepPlan) -> float:
        """Host-link time of the plan's swaps: every allocator reports one pair per block moved."""
        if not (plan.swap_out or plan.swap_in):
            return 0.0
        bb = self.setup.budget.block_bytes
        return self.cost.swap_time(len(plan.swap_out), bb) + self.cost.swap_time(len(plan.swap_in), bb)

    def _record(self, plan: StepPlan, start: float, dt: float, swap_s: float) -> None:
        sched = self.sched          # (a step that only admits beside the kept run: the split from its aggregates)
        self.log.append_step(start, dt + swap_s, swap_s, step_state(plan, sched, admitting_split(plan, sched)))

    # ------------------------------------------------------------------- run
    def run(self, queue_thirds: bool = False) -> SimResult:
        """Simulate the run; ``queue_thirds``: also gather the overload verdict's queue averages in the summary's
        pass over the log, where the run offers a rate (``kvsim run`` prints the verdict; sweeps do not ask)."""
        self.env.process(self._arrivals())
        engine = self.env.process(self._engine())
        with _fewer_collections():
            self.env.run(until=engine)
        sched = self.sched
        # requests that never arrived before max_time_s still appear, as not arrived
        reqs = request_frame(sched.request_groups(), self.table)
        self.table = None
        # only the columns the summary reads, a chunk at a time; where the run offers a rate, the same pass
        # gathers the overload verdict's queue averages (kvsim.queue_thirds: no second pass over the rows)
        thirds = QueueThirds(reqs.arrival_s) if queue_thirds and rate_driven(self.setup.scenario.workload) else None
        if thirds is None or not thirds.windows:
            chunks = self.log.column_chunks(SUMMARY_CHUNK_ROWS, SUMMARY_INPUTS)
        else:
            chunks = _feeding(thirds, self.log.column_chunks(SUMMARY_CHUNK_ROWS, SUMMARY_INPUTS + ("waiting",)))
        its = IterationStats.from_chunks(len(self.log), chunks)
        summary = run_summary(self.setup, reqs, its, self.env.now, self.kv)
        return SimResult(self.setup, reqs, None, self.env.now, summary, log=self.log,
                         queue_thirds=None if thirds is None else thirds.averages())


def _feeding(thirds: QueueThirds, chunks):
    """``chunks``, each handed to ``thirds`` on its way."""
    for c in chunks:
        thirds.add(c)
        yield c


def simulate(scenario: Scenario, *, fast_forward: bool = True) -> SimResult:
    """Run one scenario on the simulator and return its records and summary."""
    return SimEngine(setup_run(scenario), fast_forward=fast_forward).run()
