"""ModelRunner: turns a StepPlan into tensors, runs the model, samples, and reports beam parents.

It keeps the engine-side token ids of every sequence (prompt + generated) and
executes the plan's cache operations in the only safe order: swap-out first
(its blocks may be re-used by this very step), then swap-in, then
copy-on-write copies, then the forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import chain

import numpy as np
import torch

from kvsim.core.plan import StepPlan
from kvsim.core.sequence import SequenceGroup
from kvsim.core.tokens import synthetic_prompt_tokens
from kvsim.engine import sampling
from kvsim.engine.attention import AttnMetadata, GroupedMetadata
from kvsim.engine.draws import DrawsMixin, draw_logits, sampling_rows
from kvsim.engine.kv_cache import KVCache


@dataclass
class StepBatch:
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttnMetadata
    prefill_rows: list[tuple[int, SequenceGroup]] = field(default_factory=list)   # (row, group) that sample
    decode_rows: list[tuple[int, SequenceGroup]] = field(default_factory=list)    # (first row, group)
    # overlapped steps: input rows whose token the step in flight is still drawing, (row, seq id, position);
    # the ids then stay on the host (ids_host) until the step's tokens are in (ModelRunner.fill_pending)
    fill: list[tuple[int, int, int]] = field(default_factory=list)
    ids_host: np.ndarray | None = None


PENDING = -1
"""A token the step in flight is still drawing (:meth:`ModelRunner.launch`): its place in the sequence's token
list until :meth:`ModelRunner.collect` writes it."""


@dataclass
class InFlight:
    """The draws of a launched step on their way to the host (:meth:`ModelRunner.launch`)."""
    slots: list[tuple[int, int]]          # (seq id, position in its token list) per draw, in draw order
    host: torch.Tensor | None = None      # the draws, copied to (pinned) host memory asynchronously
    done: object = None                   # the copy's CUDA event (None on the CPU: the copy was synchronous)


def long_tensor(values: list[int]) -> torch.Tensor:
    """A list of ints as an int64 CPU tensor, through numpy (about 4x faster than ``torch.tensor`` on the
    thousands of per-token entries of a prefill step)."""
    return torch.from_numpy(np.fromiter(values, dtype=np.int64, count=len(values)))


def pad_rows(rows: list[list[int]]) -> np.ndarray:
    """Block tables of different lengths as one zero-padded ``[len(rows), max(1, longest)]`` int32 array."""
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = max(int(lens.max()) if len(rows) else 0, 1)
    out = np.zeros((len(rows), width), dtype=np.int32)
    if len(rows):
        out[np.arange(width) < lens[:, None]] = np.fromiter(chain.from_iterable(rows), dtype=np.int32,
                                                            count=int(lens.sum()))
    return out


class ModelRunner(DrawsMixin):
    def __init__(self, model, cache: KVCache, kv, groups: dict[int, SequenceGroup], *, backend: str,
                 sampling_mode: str = "greedy", temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 graphs=(), unified_mixed: bool = True, mixed_decode_kernel: bool | None = None,
                 prompt_tokens: dict[int, list[int]] | None = None, pad_logits: bool = True):
        from kvsim.engine.attention import MIXED_DECODE_KERNEL
        self.model = model
        self.unified_mixed = unified_mixed   # mixed steps: decode rows as 1-token chunks, one attention launch
        # ... and those one-token chunks (any in the prefill lists) attended by the decode kernel
        self.mixed_decode_kernel = MIXED_DECODE_KERNEL if mixed_decode_kernel is None else bool(mixed_decode_kernel)
        self.graphs = list(graphs)        # DecodeGraphs / PrefillGraphs: steps they fit replay a CUDA graph
        from kvsim.engine.cuda_graphs import DecodeGraphs
        # logits rows padded to the decode graphs' batch sizes (_logits): the LM head's GEMM then has the row counts
        # the calibration's decode grid timed (a graph size), not whatever count the step samples
        self.logit_sizes = next((g.sizes for g in self.graphs if isinstance(g, DecodeGraphs)), None) \
            if pad_logits else None                                 # (runtime.pad_logits)
        self.graph_steps = 0
        self.cache = cache
        self.kv = kv                      # PagedKV or ContiguousKV (the scheduler's)
        self.groups = groups
        self.backend = backend
        self.device = cache.device
        self.mode, self.temperature, self.top_p = sampling_mode, temperature, top_p
        self.gen = torch.Generator(device=cache.device).manual_seed(seed)
        self.tokens: dict[int, list[int]] = {}
        self.prompt_tokens = prompt_tokens or {}   # request id -> real prompt ids (else synthetic ones)
        self.beam_scores: dict[int, list[float]] = {}
        self.kv_layout = getattr(kv, "layout", None)   # KV groups (sliding-window models), else None
        self._group = 0                   # the KV group whose tables prepare() reads
        self.vocab = model.spec.vocab_size
        self.tp = None                    # a TPGroup on rank 0 of a tensor-parallel run: steps are broadcast
        self.trace: list | None = None    # tests: (block tables, slots) of every step (kvsim.engine.tp_ranks)
        self._pinned: torch.Tensor | None = None   # launch(): where a step's draws land on the host

    # ---------------------------------------------------------------- tokens
    def seq_tokens(self, g: SequenceGroup, seq_id: int) -> list[int]:
        t = self.tokens.get(seq_id)
        if t is None:
            given = self.prompt_tokens.get(g.spec.request_id)
            t = list(given) if given is not None else synthetic_prompt_tokens(g.spec, self.vocab).tolist()
            self.tokens[seq_id] = t
        return t

    def outputs(self, g: SequenceGroup) -> list[list[int]]:
        p = g.spec.prompt_len
        return [self.tokens[s.seq_id][p:] for s in g.seqs]

    def release(self, g: SequenceGroup) -> None:
        for s in g.seqs:
            self.tokens.pop(s.seq_id, None)
        self.beam_scores.pop(g.group_id, None)

    def _table(self, seq_id: int) -> list[int]:
        if self.kv_layout is not None:
            return self.kv.group_tables(seq_id)[self._group]
        return self.kv.block_table(seq_id)

    # ---------------------------------------------------------------- inputs
    def prepare(self, plan: StepPlan) -> StepBatch:
        """The step's inputs; with KV groups, one metadata per group (its slots, tables and window)."""
        if self.kv_layout is None:
            return self._prepare_group(plan)
        metas = []
        for g, window in enumerate(self.kv_layout.windows):
            self._group = g
            batch = self._prepare_group(plan)
            metas.append(replace(batch.meta, window=window))
        self._group = 0
        batch.meta = GroupedMetadata(metas, self.kv_layout.layer_group)
        return batch

    def _prepare_group(self, plan: StepPlan) -> StepBatch:
        bs = self.cache.block_size
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        qstart = [0]
        pctx: list[int] = []
        ptables: list[list[int]] = []
        batch = StepBatch(None, None, None)
        max_q = 0
        for gid, new, cached in zip(plan.prefill_group_ids, plan.prefill_new_tokens, plan.prefill_cached_tokens):
            g = self.groups[gid]
            if len(g.seqs) > 1 and g.generated:
                raise NotImplementedError("the engine recomputes only single-sequence groups "
                                          "(use preemption_mode auto or swap for n > 1 / beam search)")
            s0 = g.seqs[0].seq_id
            toks = self.seq_tokens(g, s0)
            table = self._table(s0)
            end = cached + new
            ids.extend(toks[cached:end])
            if end == len(toks) and toks[-1] == PENDING:      # a recomputed prompt ending in a token in flight
                batch.fill.append((len(ids) - 1, s0, end - 1))
            pos.extend(range(cached, end))
            for j in range(cached // bs, (end - 1) // bs + 1):     # each block's slots as one range
                base = table[j] * bs
                slots.extend(range(base + max(cached - j * bs, 0), base + min(end - j * bs, bs)))
            qstart.append(qstart[-1] + new)
            pctx.append(cached)
            ptables.append(table)
            max_q = max(max_q, new)
            if cached + new >= g.prefill_target:
                batch.prefill_rows.append((len(ids) - 1, g))
        dctx: list[int] = []
        dtables: list[list[int]] = []
        # a mixed step runs as one varlen launch: each decoding sequence is a chunk of one new token
        # over its p cached ones, so it joins the prefill lists (same token order, same rows)
        unified = self.unified_mixed and bool(plan.prefill_group_ids) and bool(plan.decode_group_ids)
        for gid in plan.decode_group_ids:
            g = self.groups[gid]
            batch.decode_rows.append((len(ids), g))
            # a finished group kept in a static batch: its row still runs (padded compute), re-reading its
            # context with its last token, but writes no KV and draws no token (see _sample)
            padded = g.generated >= g.spec.output_len
            for s in g.seqs:
                toks = self.seq_tokens(g, s.seq_id)
                p = len(toks) - 1
                table = self._table(s.seq_id)
                if toks[-1] == PENDING:                        # drawn by the step still in flight
                    batch.fill.append((len(ids), s.seq_id, p))
                ids.append(toks[-1])
                pos.append(p)
                slots.append(-1 if padded else table[p // bs] * bs + p % bs)
                if unified:
                    qstart.append(qstart[-1] + 1)
                    pctx.append(p)
                    ptables.append(table)
                else:
                    dctx.append(p + 1)
                    dtables.append(table)
        if unified:
            max_q = max(max_q, 1)
        n_prefill = qstart[-1]
        dev = self.device

        def tables(rows: list[list[int]]) -> torch.Tensor:
            return torch.from_numpy(pad_rows(rows)).to(dev, non_blocking=True)

        i32 = dict(dtype=torch.int32)
        if batch.fill:                    # sent once the step in flight has drawn them (fill_pending)
            batch.ids_host = np.fromiter(ids, dtype=np.int64, count=len(ids))
        else:
            batch.input_ids = long_tensor(ids).to(dev, non_blocking=True)
        batch.positions = long_tensor(pos).to(dev, non_blocking=True)
        batch.meta = AttnMetadata(
            num_prefill_tokens=n_prefill, num_decode_tokens=len(ids) - n_prefill,
            slot_mapping=long_tensor(slots).to(dev, non_blocking=True),
            prefill_query_start=torch.tensor(qstart, **i32).to(dev, non_blocking=True),
            prefill_context_lens=torch.tensor(pctx, **i32).to(dev, non_blocking=True),
            prefill_block_tables=tables(ptables), max_prefill_query_len=max_q,
            decode_context_lens=torch.tensor(dctx, **i32).to(dev, non_blocking=True),
            decode_block_tables=tables(dtables), max_decode_context_len=max(dctx, default=1),
            backend=self.backend, single_rows_decode=self.mixed_decode_kernel and n_prefill > 0)
        return batch

    def fill_pending(self, batch: StepBatch) -> None:
        """The prepared step's input ids, with the tokens the previous step drew (collected by now), on the device."""
        host = batch.ids_host
        if host is None:
            return
        for row, sid, at in batch.fill:
            host[row] = self.tokens[sid][at]
        if batch.fill and int(host.min()) < 0:
            raise RuntimeError("a step's input token is still being drawn: collect the step in flight first")
        batch.input_ids = torch.from_numpy(host).to(self.device, non_blocking=True)
        batch.ids_host, batch.fill = None, []

    # ---------------------------------------------------------------- execute
    @torch.inference_mode()
    def launch(self, plan: StepPlan, batch: StepBatch) -> InFlight:
        """Run the step and start its draws on their way to the host without waiting for them: each drawn
        sequence gets a :data:`PENDING` token until :meth:`collect`. Steps with beam-search rows use
        :meth:`execute` (their parents decide the scheduler's next step)."""
        hidden = self._forward(plan, batch)
        if hidden is None:
            return InFlight([])
        draw_rows, draw_to, beam_first, beam_next = sampling_rows(batch)
        if beam_first or beam_next:
            raise RuntimeError("launch() takes steps without beam search; use execute()")
        if not draw_rows:
            return InFlight([])
        rows = draw_logits(self._logits(hidden, batch), draw_rows)
        toks = sampling.draw_tensor(rows, self.mode, self.temperature, self.top_p, self.gen)
        slots = []
        for g, sid in draw_to:
            t = self.seq_tokens(g, sid)
            slots.append((sid, len(t)))
            t.append(PENDING)
        if self.device.type != "cuda":
            return InFlight(slots, toks.cpu())
        if self._pinned is None or self._pinned.numel() < len(slots):   # one step in flight at a time: one buffer
            self._pinned = torch.empty(max(256, 2 * len(slots)), dtype=torch.int64, pin_memory=True)
        host = self._pinned[:len(slots)]
        host.copy_(toks, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return InFlight(slots, host, done)

    def collect(self, step: InFlight) -> None:
        """Wait for a launched step's draws and write them over its :data:`PENDING` tokens."""
        if not step.slots:
            return
        if step.done is not None:
            step.done.synchronize()
        for (sid, at), t in zip(step.slots, step.host.tolist()):
            self.tokens[sid][at] = t

    def _forward(self, plan: StepPlan, batch: StepBatch):
        """The step's cache operations and forward pass; its hidden states (None for a step of no tokens)."""
        if batch.input_ids is None:
            self.fill_pending(batch)
        if self.tp is not None:           # the workers run the same cache operations and forward pass
            from kvsim.engine.tp_ranks import send_step
            send_step(self.tp, plan, batch)
        if self.trace is not None:
            from kvsim.engine.tp_ranks import step_trace
            self.trace.append(step_trace(batch.meta))
        if plan.swap_out:
            self.cache.swap_out(plan.swap_out)
        if plan.swap_in:
            self.cache.swap_in(plan.swap_in)
        if plan.copy_pairs:
            self.cache.copy(plan.copy_pairs)
        if batch.meta.num_tokens == 0:
            return None
        graph = next((g for g in self.graphs if g.fits(batch.meta)), None)
        if graph is not None:
            self.graph_steps += 1
            return graph.run(batch.input_ids, batch.positions, batch.meta)
        return self.model(batch.input_ids, batch.positions, self.cache.gpu, batch.meta)

    @torch.inference_mode()
    def execute(self, plan: StepPlan, batch: StepBatch, meanwhile=None) -> dict[int, list[int]]:
        """Run the step; append sampled tokens; return beam parents per beam group. ``meanwhile()`` is called
        once the forward pass and the logits are queued on the GPU, before the draws are waited for (the serving
        loop records the step's state there, off the critical path)."""
        hidden = self._forward(plan, batch)
        logits = self._logits(hidden, batch) if hidden is not None else None
        if meanwhile is not None:
            meanwhile()
        if hidden is None:
            return {}
        return self._sample(logits, batch)
