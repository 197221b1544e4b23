"""A decode run's members over its life (:class:`kvsim.core.decode_run.DecodeRun` mixes this in): taken up again
after the steps taken one at a time since it ended, where the scheduler's running groups still begin with its
own (groups gone from it leave its sums, its groups catch up the steps they took, new ones join at its end), and
a step taken from it (preempting, or swapping groups in) applied to its aggregates. Clock-free, as the rest of core.
"""
from __future__ import annotations

from bisect import bisect_left, insort

from kvsim.core.scheduler import Scheduler


def _counts(sched: Scheduler) -> tuple[int, int, int, int]:
    """The scheduler's step and join counts (see ``Scheduler.__init__``): what a kept run compares on resume."""
    return sched.kv_steps, sched.uniform_steps, sched.tail_steps, sched.joins


class RunMembersMixin:
    """Taking a :class:`~kvsim.core.decode_run.DecodeRun` up again and the steps taken from it (its attributes are
    set by ``DecodeRun.__init__``)."""

    def resume(self) -> bool:
        """Take up this (ended) run again where the scheduler's running groups begin with some of its groups, in
        its order, each ``d`` steps on (taken one at a time since, ``d`` the same for all), followed by new ones
        (admitted or swapped in since): its other groups (finished or preempted since, wherever they stood)
        leave the run at its step, the rest catch up ``d`` steps and the new ones join, and the run is in the
        state a fresh one would have, its steps shifted by ``self.step``. False (nothing changed) otherwise."""
        running, old, fins, j = self.sched.running, self._groups, self._fins, self.step
        n_old = len(old)
        sched = self.sched
        kv_steps, uniform, tail, joins = self._seen
        if sched.kv_steps == kv_steps:
            # since the run stopped, only steps in which every decoding group still running took its slot (d of
            # them), admissions and swap-ins: the groups still here are d steps on; the run takes them up without
            # reading each one, (1) when none left (no preemption) and any new ones come after them, or (2) when
            # none joined and the ones left were its last
            d = sched.uniform_steps - uniform + sched.tail_steps - tail
            if sched.tail_steps == tail and running[:n_old] == old:
                new = running[n_old:]
                if self.tracker.shares_partial(new):
                    return False
                self._catch_up(j, d)
                self._join(new, self.step)
                self._seen = _counts(sched)
                return True
            m = len(running)
            if sched.joins == joins and m < n_old and running == old[:m]:
                self._leave(range(m, n_old), j)
                del old[m:], fins[m:]
                self._catch_up(j, d)
                self.num_groups = m
                self._seen = _counts(sched)
                return True
        # the longest start of ``running`` that is a subsequence of ``old``: the groups kept (their positions)
        kept: list[int] = []
        i = 0
        for g in running:
            while i < n_old and old[i] is not g:
                i += 1
            if i == n_old:
                break
            kept.append(i)
            i += 1
        k = len(kept)
        d = 0
        if k:
            g, f = running[0], fins[kept[0]]
            d = f - (g.spec.output_len - g.seqs[0].generated - 1) - j
            if d < 0:
                return False
            for g, x in zip(running[1:k], kept[1:]):
                if g.spec.output_len - g.seqs[0].generated - 1 + j + d != fins[x]:
                    return False
        new = running[k:]                            # (may hold groups gone from the run again: out, then in anew)
        tracker = self.tracker
        if not tracker.moved(running[:k], j, d) or tracker.shares_partial(new):
            return False
        if k < n_old:                                # groups gone since: out at step j
            keep = set(kept)
            self._leave([x for x in range(n_old) if x not in keep], j)
            if k == kept[-1] + 1 if k else True:     # the kept ones are the first k: cut the tails
                del old[k:], fins[k:]
            else:
                old[:] = [old[x] for x in kept]
                fins[:] = [fins[x] for x in kept]
        self._catch_up(j, d)
        self._seen = _counts(sched)
        self._join(new, self.step)
        return True

    def _leave(self, gone, j: int) -> None:
        """The groups at positions ``gone`` of the run (finished or preempted since it stopped) leave it at step
        ``j``: their aggregates out (the caller removes them from the run's lists)."""
        old, fins, tracker = self._groups, self._fins, self.tracker
        for x in gone:
            g, f = old[x], fins[x]
            tracker.drop(g, j)
            n = g.spec.prompt_len + g.spec.output_len - 1 - f + j       # their context at step j
            self.ctx_sum -= n * len(g.seqs)
            for _ in g.seqs:
                del self._base[bisect_left(self._base, n - j)]
            self.num_seqs -= len(g.seqs)
            if self._group_of is not None:
                for sid in g.seq_ids:
                    del self._group_of[sid]
            at = self._done_at[f]
            at.remove(g)
            if not at:
                del self._done_at[f]
                self._finish_steps.remove(f)

    def _catch_up(self, j: int, d: int) -> None:
        """The run's groups took ``d`` steps outside it since step ``j`` (stepped): the aggregates follow."""
        if d:
            self.tracker.caught_up(j, d)
            self.step = j + d
            self.ctx_sum += self.num_seqs * d

    def _join(self, new: list, j: int) -> None:
        """Groups admitted or swapped in join the run ``j`` steps in (after the tracked ones, in running order)."""
        self.tracker.extend(new, j)
        fins, old = self._fins, self._groups
        base, done_at = self._base, self._done_at
        for g in new:
            spec, seqs = g.spec, g.seqs
            f = spec.output_len - seqs[0].generated - 1 + j
            fins.append(f)
            at = done_at.get(f)
            if at is None:
                done_at[f] = [g]
                insort(self._finish_steps, f)
            else:
                at.append(g)
            p = spec.prompt_len
            for s in seqs:
                n = p + s.generated
                self.ctx_sum += n
                insort(base, n - j)
            self.num_seqs += len(seqs)
        old.extend(new)
        self.num_groups = len(old)
        if self._group_of is not None:
            for g in new:
                for sid in g.seq_ids:
                    self._group_of[sid] = g

    def take_step(self, groups: list, takers: list[int], new_blocks: int) -> None:
        """One step of the run taken alone, beside what a segment models (a step that preempts, or that admits
        prompts beside the run): ``groups``, the run's groups that decode in it (running order), each take their
        next slot, ``takers`` the blocks still to be taken (sequences whose last block is full, in the tracker's
        order), ``new_blocks`` the blocks the run's sequences take in the step in all; the run moves one step on."""
        tracker, j = self.tracker, self.step
        tracker.bm.append_slots_bulk(tracker.seq_ids, 1, takers)
        tracker._count(j, 1, [new_blocks])
        if self.sched.multi_seq:
            for g in groups:
                for s in g.seqs:
                    s.generated += 1
        else:
            for g in groups:
                g.seqs[0].generated += 1
        self.step = j + 1
        self.ctx_sum += self.num_seqs
