"""A parallel-sampling group's blocks moved or freed a group at a time: the paged block manager's fast paths for
``swap_out``, ``swap_in`` and a group's free (:mod:`kvsim.core.block_swap`, ``PagedKV.free_group``).

A group of ``n`` sequences forked from one prompt holds its blocks in one shape: every table starts with the
same ``k`` blocks (the full prompt blocks, referenced by the ``n`` tables alone: ref ``n``), and each table's other
blocks are its own (ref 1: the partial prompt block copied on write, then its decode blocks).
:func:`shared_start` finds ``k`` (or says the tables are not so). In that shape the entry-by-entry walks are known
in advance: blocks are taken on the other side in order of first reference (the first table whole, then each
other table's own blocks), and freed in order of last reference (each table's own blocks last first, the last
table's shared start after its own). :class:`GroupMovesMixin` does that with one loop over the distinct blocks
and list slices; the same pairs and the same state as the walks (``tests/test_block_group_swap.py``).

Parallel sampling (n=4) at 1,000 requests swaps ~2,600 groups out and back in, four ~14-block tables each (~9
blocks shared): a swap out and back in of such a group took ~326k instructions walking each entry, ~225k here
(the whole n4 run at 1,000 requests: 3.597 G -> 3.474 G instructions). A first version keyed the distinct blocks
with dicts (``dict.fromkeys`` in both orders, itemgetter picks): it cost more than the walk (3.764 G).
"""
from __future__ import annotations


def shared_start(tabs: list[list[int]], ref: list[int]) -> int:
    """``k`` where the ``n >= 2`` tables all start with the same ``k`` blocks, each referenced ``n`` times, and
    every other block of theirs is referenced once; -1 where they are not so."""
    n = len(tabs)
    t0 = tabs[0]
    k = 0
    for b in t0:
        if ref[b] != n:
            break
        k += 1
    get = ref.__getitem__
    if k:
        pre = t0[:k]
        for t in tabs:
            if t[:k] != pre:
                return -1
            if len(t) > k and sum(map(get, t[k:])) != len(t) - k:     # (each >= 1: all 1)
                return -1
    else:
        for t in tabs:
            if sum(map(get, t)) != len(t):
                return -1
    return k


def _move(seq_ids, tables, ref, fill, ntok, to_tables, to_ref, to_fill, to_ntok, to_free, freed, *,
          backwards: bool):
    """A group's tables moved to the other side (swap out: GPU -> CPU, swap in: CPU -> GPU) in the shared-start
    shape: ``(pairs, distinct blocks, slots used)``, or None (nothing changed) where the tables are not in the shape
    or ``to_free`` lacks a block for each. Blocks are taken from ``to_free`` in first-reference order (the pops of
    the walk); the moved blocks go back to ``freed`` at their last reference (the shared start with the last
    table), each table's last block first where ``backwards``."""
    tabs = [tables[s] for s in seq_ids]
    k = shared_start(tabs, ref)
    n = len(tabs)
    d = sum(map(len, tabs)) - k * (n - 1)           # distinct blocks
    if k < 0 or not d or d > len(to_free):
        return None
    new = to_free[-d:]                              # the blocks d pops give, in that order
    del to_free[-d:]
    new.reverse()
    used = 0
    pairs = []
    pre = new[:k]
    pos = 0
    last = seq_ids[-1]
    for s, t in zip(seq_ids, tabs):
        own = t[k:] if pos else t                   # (the first table whole: its shared start comes first)
        to_own = new[pos:pos + len(own)]
        for b, c in zip(own, to_own):
            f = fill[b]
            to_fill[c] = f
            to_ref[c] = 1
            ref[b] = 0
            used += f
        if not pos:
            for c in pre:
                to_ref[c] = n
        pairs += zip(own, to_own)
        pos += len(own)
        del tables[s]
        to_tables[s] = pre + to_own if pos > len(own) else to_own
        to_ntok[s] = ntok.pop(s)
        rest = t if s == last else t[k:]
        freed.extend(reversed(rest) if backwards else rest)
    return pairs, d, used


class GroupMovesMixin:
    """A group's swap out, swap in and free in the shared-start shape (see the module doc), for
    :class:`~kvsim.core.block_manager.PagedBlockManager` with its own ``_take_block`` and ``_release``."""

    def _group_swap_out(self, seq_ids: list[int]) -> list[tuple[int, int]] | None:
        """``swap_out(seq_ids)``'s pairs and state where the tables are in the shape and no block is cached;
        None (nothing changed) otherwise. GPU blocks are released last block first."""
        if self._hash_of:
            return None
        pairs = _move(seq_ids, self.tables, self.ref, self.fill, self.num_tokens,
                      self.cpu_tables, self.cpu_ref, self.cpu_fill, self.cpu_num_tokens, self._cpu_free, self._free,
                      backwards=True)
        if pairs is not None:
            self.num_allocated -= pairs[1]
            self.used_slots -= pairs[2]
            return pairs[0]
        return None

    def _group_swap_in(self, seq_ids: list[int]) -> list[tuple[int, int]] | None:
        """``swap_in(seq_ids)``'s pairs and state where the CPU tables are in the shape and the free list has a
        block for each; None (nothing changed) otherwise. CPU blocks are freed in table order."""
        pairs = _move(seq_ids, self.cpu_tables, self.cpu_ref, self.cpu_fill, self.cpu_num_tokens,
                      self.tables, self.ref, self.fill, self.num_tokens, self._free, self._cpu_free,
                      backwards=False)
        if pairs is not None:
            self.num_allocated += pairs[1]
            self.used_slots += pairs[2]
            return pairs[0]
        return None

    def free_group(self, seq_ids: list[int]) -> None:
        """``free(s)`` for each of a group's sequences in order: where every one holds a GPU table and the
        manager's release is its own, the tables are released together (:meth:`release_tables`)."""
        tables = self.tables
        if type(self)._release is type(self)._plain_release and all(map(tables.__contains__, seq_ids)):
            ntok = self.num_tokens
            tabs = [tables.pop(sid) for sid in seq_ids]
            for sid in seq_ids:
                del ntok[sid]
            self.release_tables(tabs)
            return
        for sid in seq_ids:
            self.free(sid)

    def release_tables(self, tabs: list[list[int]]) -> None:
        """``_release_all(reversed(t))`` for each of a group's tables in order (dropped from the manager by the
        caller): in the shape, with no block cached, a group at a time."""
        ref = self.ref
        k = shared_start(tabs, ref) if len(tabs) > 1 and not self._hash_of else -1
        if k < 0:
            for t in tabs:
                self._release_all(reversed(t))
            return
        fill, free = self.fill, self._free
        used = d = 0
        last = len(tabs) - 1
        for i, t in enumerate(tabs):
            own = t if not i or i == last else t[k:]
            for b in own:
                used += fill[b]
                ref[b] = 0
            d += len(own)
            free.extend(reversed(t) if i == last else reversed(t[k:]) if not i else reversed(own))
        if last and k:                  # (the shared start counted twice: in the first and the last table)
            for b in tabs[0][:k]:
                used -= fill[b]
            d -= k
        self.num_allocated -= d
        self.used_slots -= used
