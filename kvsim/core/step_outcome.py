"""Applying a finished step to the scheduler's groups, for :class:`kvsim.core.scheduler.Scheduler`: prompt
progress and first tokens, one token per decoding sequence, beam search's re-parenting (the engine's sampled
parents, or the seeded model of :mod:`kvsim.core.beam` for groups it does not give), and finished groups freed.
It also counts the step for kept decode runs (``kv_steps``, ``uniform_steps``, ``tail_steps``; see
``Scheduler.__init__``).
"""
from __future__ import annotations

from kvsim.core.plan import StepPlan
from kvsim.core.sequence import FINISHED, RUNNING, SequenceGroup


class StepOutcomeMixin:
    """``complete_step`` and ``finish`` over the scheduler's ``groups``, ``kv``, ``cfg``, ``running``, ``finished``,
    its step counts and plan markers, ``_static_done`` and ``_beam_parents`` (see the module doc)."""

    def complete_step(self, plan: StepPlan, now: float,
                      beam_parents: dict[int, list[int]] | None = None) -> list[SequenceGroup]:
        """Apply a finished step's outcome: new tokens, beam re-parenting, finished groups freed.

        ``beam_parents`` gives the real parents chosen by an engine's sampler;
        groups missing from it use the seeded beam model.
        Returns the groups that finished at ``now``.
        """
        if plan.copy_pairs:
            self.kv_steps += 1
        elif plan is self._uniform_plan:             # (_decode preempted nothing; swapped-in groups: ``joins``)
            self.uniform_steps += 1
        elif plan is self._tail_plan:                # (_decode's preempting branch; swapped-in groups: ``joins``)
            self.tail_steps += 1
        elif plan.decode_group_ids or plan.preempted or plan.swap_out or plan.swap_in:
            self.kv_steps += 1
        self._uniform_plan = self._tail_plan = None
        groups = self.groups
        done = self._prefills_advance(plan, now)
        static = self.cfg.policy == "static"
        if static:
            stepped = [groups[gid] for gid in plan.decode_group_ids if gid not in self._static_done]
        else:
            stepped = list(map(groups.__getitem__, plan.decode_group_ids))
        beams = [g for g in stepped if g.spec.beam_width > 1] if self.serves_beams else None
        if beams and not beam_parents:
            # the seeded model's parents for every beam group of the step, drawn together in step order, then
            # the groups re-parented in step order (one walk where the KV manager has one)
            drawn = self._beam_parents.many([len(g.seqs) for g in beams], self.cfg.beam_keep_prob,
                                            self.cfg.beam_decay)
            kv = self.kv
            regroup = getattr(kv, "reparent_groups", None)
            if regroup is not None:
                regroup(beams, drawn)
            else:
                for g, parents in zip(beams, drawn):
                    kv.reparent(g, parents)
        elif beams:
            # the seeded model's parents for this step's beam groups the engine gave none, drawn together in
            # step order, then each group re-parented in step order
            given = beam_parents
            modelled = [len(g.seqs) for g in beams if given.get(g.group_id) is None]
            drawn = iter(self._beam_parents.many(modelled, self.cfg.beam_keep_prob, self.cfg.beam_decay)
                         if modelled else ())
            reparent = self.kv.reparent
            for g in beams:
                parents = given.get(g.group_id)
                reparent(g, next(drawn) if parents is None else parents)
        for g in stepped:
            seqs = g.seqs
            if len(seqs) == 1:
                s = seqs[0]
                s.generated = n = s.generated + 1
            else:
                for s in seqs:
                    s.generated += 1
                n = seqs[0].generated
            if n >= g.spec.output_len:
                done.append(g)
        if static:
            self._static_done.update(g.group_id for g in done)
            if len(self._static_done) < len(self.running):
                return []
            done = list(self.running)
        self.finish(done, now)
        return done

    def finish(self, done: list[SequenceGroup], now: float) -> None:
        """Free finished groups (in the given order) and stamp their finish time.

        Invariant: afterwards none of ``done`` holds KV blocks and ``running`` holds only RUNNING groups.
        """
        for g in done:
            g.blocks_at_finish = self.kv.group_blocks(g)
            self.kv.free_group(g)
            self.kv.forget(g)
            g.status = FINISHED
            g.finish_s = now
            self.finished.append(g)
        if len(done) == 1:
            # (mostly one group: out of running by its place, list.remove comparing identity first in C, where a
            # pass over running read each group's status; a group preempted in its own step is not there)
            try:
                self.running.remove(done[0])
            except ValueError:
                pass
        elif done:
            self.running = [g for g in self.running if g.status is RUNNING]

    def _prefills_advance(self, plan: StepPlan, now: float) -> list[SequenceGroup]:
        """The plan's prefills computed at ``now``: each group's prompt progress; a group whose prompt ends takes
        its first token. Returns those whose output is then complete (in plan order), still to be finished."""
        groups = self.groups
        done: list[SequenceGroup] = []
        for gid, new in zip(plan.prefill_group_ids, plan.prefill_new_tokens):
            g = groups[gid]
            g.prefill_done += new
            if g.prefill_done >= g.prefill_target:
                for s in g.seqs:
                    s.generated += 1
                if g.first_token_s is None:
                    g.first_token_s = now
                if g.generated >= g.spec.output_len:
                    done.append(g)
        return done
