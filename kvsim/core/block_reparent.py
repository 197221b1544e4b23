"""Beam search's re-parenting of block tables: each beam continues from a parent beam's history.

A mixin of :class:`kvsim.core.block_manager.PagedBlockManager` (it uses the manager's tables, token counts,
ref counts and releases). ``reparent`` re-parents one group's sequences; ``reparent_groups`` does a whole
step's groups in one walk (the scheduler's beam step: one call per step instead of one per group, the blocks
released once at the end), with the same tables, ref counts and free-list order as ``reparent`` group after
group.
"""
from __future__ import annotations

_IDENTITY = [list(range(k)) for k in range(17)]     # beam parents when every beam keeps its own history


def reparent_suffix(src: list[int], dst: list[int], ref: list[int], dropped: list[int]) -> int:
    """One beam's re-parenting, the table ``dst`` taking ``src``'s blocks (the caller replaces the table): the blocks
    past their shared prefix gain a reference in ``src`` and are dropped from ``dst`` (appended to ``dropped``, last
    block first); returns the prefix's length. Tables of one group form a tree (forks share a prefix, later blocks
    are private), so equality is prefix-closed: the prefix's length is found by bisection (beams that parted long ago
    would otherwise be walked block by block), after a look at the last two entries (beams mostly part recently),
    and only the differing suffixes are touched."""
    ls, ld = len(src), len(dst)
    lo = ls if ls < ld else ld
    if lo and src[lo - 1] != dst[lo - 1]:
        if lo > 1 and src[lo - 2] == dst[lo - 2]:
            lo -= 1
        else:                                   # src[:a] == dst[:a], src[b] != dst[b]
            a, b = 0, lo - 1
            while a < b:
                m = (a + b) >> 1
                if src[m] == dst[m]:
                    a = m + 1
                else:
                    b = m
            lo = a
    if ls == ld and lo == ls - 1:               # (mostly: the last blocks alone differ)
        ref[src[lo]] += 1
        dropped.append(dst[lo])
    else:
        for b in src[lo:]:
            ref[b] += 1
        dropped += dst[lo:][::-1]
    return lo


class ReparentMixin:
    """Beam re-parenting of :class:`~kvsim.core.block_manager.PagedBlockManager` (see the module doc)."""

    def reparent(self, seq_ids: list[int], parents: list[int]) -> None:
        """Beam search step: sequence ``seq_ids[i]`` continues from ``seq_ids[parents[i]]``.

        Each child's table becomes a shared copy of its parent's (ref counts
        grow), then the old tables are released, so blocks of beams that left no
        child are freed and blocks of common ancestors stay shared.
        Invariant: sum of ref counts == table entries before and after.
        """
        self.reparent_groups((seq_ids,), (parents,))

    def reparent_groups(self, seq_ids_of, parents_of) -> None:
        """``reparent(seq_ids, parents)`` for each pair of ``zip(seq_ids_of, parents_of)`` in order (the groups'
        sequences disjoint): the same tables, counts, ref counts and free-list order.

        Where the manager's own ``_release`` is in use, the replaced suffixes of all groups are released
        together after every group's tables are set: in the same order as group by group, and no block a group
        releases reaches ref 0 any earlier for it (a block a later group shares from a parent's table is held by
        that table; groups' sequences are disjoint, so a group's step does not change another's tables)."""
        tables, ntok, ref = self.tables, self.num_tokens, self.ref
        plain = type(self)._release is type(self)._plain_release
        identity = _IDENTITY
        dropped: list[int] = []             # each replaced suffix, last block first, in beam order
        for seq_ids, parents in zip(seq_ids_of, parents_of):
            k = len(parents)
            if parents == identity[k] if k < 17 else parents == list(range(k)):
                continue                      # every beam kept its own history
            old = list(map(tables.__getitem__, seq_ids))
            lens = list(map(ntok.__getitem__, seq_ids))
            for i, p in enumerate(parents):
                if p == i:
                    continue                  # kept beam: table unchanged
                reparent_suffix(old[p], old[i], ref, dropped)
                sid = seq_ids[i]
                tables[sid] = old[p][:]
                ntok[sid] = lens[p]
            if not plain and dropped:         # a subclass's own release: group by group
                self._release_own(dropped)
                dropped = []
        if dropped:
            self._release_all(dropped)

    def _release_own(self, dropped: list[int]) -> None:
        """Release ``dropped`` in order through a subclass's ``_release`` (blocks still shared elsewhere only lose
        a reference)."""
        ref, release = self.ref, self._release
        for b in dropped:
            if ref[b] > 1:
                ref[b] -= 1               # still held by another table (what _release does then)
            else:
                release(b)
