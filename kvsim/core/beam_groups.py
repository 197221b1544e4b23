"""A beam run's groups (:mod:`kvsim.core.beam_run`): read from the scheduler's state, joining a run, handed back
where it ends, and taken up again.

:func:`groups_state` reads groups in one pass (each group's sequences, tables and slots, its final KV tokens and
the beams its next partial append copies; the sums a run keeps: context tokens, steps left, memory split terms,
the next appends' blocks); :func:`split_terms` is one group's memory split terms (what a run adds for a group
joining it and takes off for one leaving it). :class:`RunGroupsMixin` gives the run its groups' joins
(``_join``), its end (``end``: the state handed back, finished groups finished) and ``take_up``: a run that ended
goes on where only arrivals and prompt-only steps came since, its finished groups dropped and the admitted
ones joined, without reading its other groups again.
"""
from __future__ import annotations

from kvsim.core.block_manager import PagedBlockManager

PLANS: dict[int, dict[int, tuple]] = {}        # width -> parents' code -> re-parenting plan (beam_run._plan)


def groups_state(running: list, bm: PagedBlockManager) -> tuple | None:
    """What :class:`BeamRun` keeps of the running groups, read in one pass (see its ``__init__``), or None where a
    group is not a beam group past its prompt whose sequences hold as many slots each. The split terms are
    ``PagedKV.split_terms``' for such groups (every sequence of a group holding ``n`` slots); the need is
    ``PagedKV.append_needs``' sum (a block each where a group's sequences end on a full block, else its copies)."""
    ntok, tables, ref, bs = bm.num_tokens, bm.tables, bm.ref, bm.block_size
    ids_of, tabs_of, lens, finals, copy_of = [], [], [], [], []
    ctx_sum = internal = logical = need = 0
    left = None
    for g in running:
        spec = g.spec
        if spec.beam_width <= 1 or g.prefill_done < g.prefill_target:
            return None
        ids = g.seq_ids
        n = ntok.get(ids[0])
        if n is None:
            return None
        for s in ids:
            if ntok.get(s) != n:
                return None
        ids_of.append(ids)
        tabs = [tables[s] for s in ids]
        tabs_of.append(tabs)
        lens.append(n)
        m = len(ids)
        if n % bs:
            js = shared_last(tabs, ref)
            need += len(js)
        else:
            js = ()
            need += m
        copy_of.append(js)
        p, out = spec.prompt_len, spec.output_len
        final = p + out - 1
        finals.append(final)
        seqs = g.seqs
        for s in seqs:
            ctx_sum += p + s.generated
        todo = out - seqs[0].generated
        if left is None or todo < left:
            left = todo
        i, lg = split_terms(m, n, final, bs)
        internal += i
        logical += lg
    return ids_of, tabs_of, lens, finals, copy_of, ctx_sum, left, internal, logical, need


def split_terms(m: int, n: int, final: int, bs: int) -> tuple[int, int]:
    """``PagedKV.split_terms``' (internal, logical) slots of a group of ``m`` sequences holding ``n`` slots each,
    ``final`` KV tokens at its end (a sequence never holds more than its final tokens: its internal fragmentation
    is its last block's slots past them)."""
    cap = -(-n // bs) * bs
    return (m * (cap - (final if final > n else n)) if cap > final else 0), m * cap


def shared_last(tabs: list[list[int]], ref: list[int]) -> list[int]:
    """The tables (indices, in order) whose last block an append copies, as ``append_slots`` walks them: a block
    still shared when its holder's turn comes (each copy before it took one reference off; the last holder writes
    in place)."""
    copied: dict[int, int] = {}
    out = []
    for j, table in enumerate(tabs):
        b = table[-1]
        c = copied.get(b, 0)
        if ref[b] - c > 1:
            out.append(j)
            copied[b] = c + 1
    return out


class RunGroupsMixin:
    """A :class:`~kvsim.core.beam_run.BeamRun`'s groups joining it, handed back where it ends, and taken up again
    (see the module doc); over the run's per-group lists and sums."""

    def _join(self, groups: list, state: tuple) -> None:
        """``groups`` join the run (after its own), ``state`` their :func:`groups_state`."""
        self.groups += groups
        ids, tabs, lens, finals, copy_of, ctx_sum, _, internal, logical, need = state
        self.ids += ids
        self.tabs += tabs
        self.lens += lens
        self.finals += finals
        self.copy_of += copy_of
        widths = list(map(len, ids))
        self.widths += widths
        self.plans += [PLANS.setdefault(k, {}) for k in widths]
        self.num_seqs += sum(widths)
        self.ctx_sum += ctx_sum
        self.internal += internal
        self.logical += logical
        self.need += need

    def end(self, end_s: float) -> None:
        """The run's slots into the manager's ``num_tokens`` (and its last blocks' fill) and its tokens into the
        sequences; the groups whose last token came at its last step finish at ``end_s`` (``done``: the run may
        still be taken up again, :meth:`take_up`)."""
        steps = self.steps
        bm = self.bm
        ntok, fill, bs = bm.num_tokens, bm.fill, bm.block_size
        done = []
        for g, ids, n, tabs in zip(self.groups, self.ids, self.lens, self.tabs):
            for s in ids:
                ntok[s] = n
            last = n - (len(tabs[0]) - 1) * bs
            for table in tabs:
                fill[table[-1]] = last
            for s in g.seqs:
                s.generated += steps
            if g.seqs[0].generated >= g.spec.output_len:
                done.append(g)
        if done:
            self.sched.finish(done, end_s)
        self.done = done

    def take_up(self, running: list) -> bool:
        """Whether the running groups are this (ended) run's groups but those finished where it ended, in its
        order, followed by any admitted since (each a beam group past its prompt, its sequences as long), where
        the caller says nothing but arrivals and prompt-only steps happened since
        (:func:`~kvsim.core.beam_run.prompt_only`): the run then drops the finished groups (their terms leave its
        sums), the admitted ones join, and it may go on, as a fresh run would from the scheduler's state
        (:func:`~kvsim.core.beam_run.start_beam_run`). False (nothing changed) otherwise."""
        done, groups = self.done, self.groups
        if not done:
            if len(running) == len(groups):
                return running == groups
            keep = None
            n = len(groups)
            if len(running) < n or running[:n] != groups:
                return False
        else:
            keep = [i for i, g in enumerate(groups) if g not in done]
            n = len(keep)
            if len(running) < n or any(groups[i] is not g for i, g in zip(keep, running)):
                return False
        state = None
        if len(running) > n:
            state = groups_state(running[n:], self.bm)
            if state is None:
                return False
        if keep is not None:
            bs = self.bm.block_size
            for i, g in enumerate(groups):
                if g in done:                   # its context, split terms and next need leave the sums
                    p, m, slots = g.spec.prompt_len, self.widths[i], self.lens[i]
                    self.ctx_sum -= sum(p + s.generated for s in g.seqs)
                    internal, logical = split_terms(m, slots, self.finals[i], bs)
                    self.internal -= internal
                    self.logical -= logical
                    self.need -= m if slots % bs == 0 else len(self.copy_of[i])
                    self.num_seqs -= m
            for name in ("groups", "ids", "tabs", "lens", "finals", "copy_of", "widths", "plans"):
                old = getattr(self, name)
                setattr(self, name, [old[i] for i in keep])
            self.done = []
        if state is not None:
            self._join(running[len(self.groups):], state)
        self.left = min(g.spec.output_len - g.seqs[0].generated for g in running)
        return True
