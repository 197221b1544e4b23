"""Appending token slots to block tables: the paged block manager's decode path.

A mixin of :class:`kvsim.core.block_manager.PagedBlockManager` (it uses the
manager's tables, ref counts, fills and ``_take_block``): one slot with
copy-on-write of a shared partial last block (``append_slot``), one slot for
each of a group's sequences (``append_slots``), many decode steps of many
sequences at once in the order stepping takes blocks (``append_slots_bulk``),
the exact count of blocks an append takes (``blocks_to_append``), and
``allocate``'s new blocks where the free list runs short (``_allocate_evicting``:
each block taken as ``_take_block`` would take it, evicting cached blocks, inlined).
"""
from __future__ import annotations

OUT_OF_BLOCKS = "out of GPU blocks (caller must check capacity first)"


class AppendMixin:
    """Slot appends of :class:`~kvsim.core.block_manager.PagedBlockManager` (see the module doc)."""

    def append_slot(self, seq_id: int) -> tuple[int, int] | None:
        """Add one token slot to ``seq_id``; return a copy-on-write ``(src, dst)`` pair if one was needed.

        Invariant: never writes into a block whose ref count is > 1 — a shared
        partial last block is first copied into a fresh private block.
        Caller must ensure a free block exists (``can_append``).
        """
        n = self.num_tokens[seq_id]
        table = self.tables[seq_id]
        bs = self.block_size
        cow = None
        if n % bs == 0:
            b = self._take_block()
            table.append(b)
        else:
            b = table[-1]
            if self.ref[b] > 1:
                nb = self._take_block()
                self.fill[nb] = self.fill[b]
                self.used_slots += self.fill[b]
                self.ref[b] -= 1
                table[-1] = nb
                cow = (b, nb)
                b = nb
        self.fill[b] += 1
        self.used_slots += 1
        self.num_tokens[seq_id] = n + 1
        return cow

    def append_slots(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """``append_slot`` on each of ``seq_ids`` in order (same blocks, same state); the copy-on-write pairs."""
        ntok, tables, ref, fill = self.num_tokens, self.tables, self.ref, self.fill
        bs = self.block_size
        copies = []
        copied = 0
        # blocks off the free list are taken inline, as _take_block takes them (counted in ``taken``); an empty
        # free list or a subclass's own _take_block goes through the method
        free = self._free if type(self)._take_block is type(self)._plain_take else ()
        taken = 0
        for sid in seq_ids:
            n = ntok[sid]
            if n % bs == 0:
                if free:
                    b = free.pop()
                    ref[b] = 1
                    fill[b] = 0
                    taken += 1
                else:
                    b = self._take_block()
                tables[sid].append(b)
            else:
                table = tables[sid]
                b = table[-1]
                if ref[b] > 1:
                    if free:
                        nb = free.pop()
                        ref[nb] = 1
                        taken += 1
                    else:
                        nb = self._take_block()
                    f = fill[b]
                    fill[nb] = f
                    copied += f
                    ref[b] -= 1
                    table[-1] = nb
                    copies.append((b, nb))
                    b = nb
            fill[b] += 1
            ntok[sid] = n + 1
        self.num_allocated += taken
        self.used_slots += copied + len(seq_ids)
        return copies

    def append_slots_bulk(self, seq_ids: list[int], steps: int, takers: list[int] | None = None) -> None:
        """Same end state as ``steps`` rounds of ``append_slot`` over ``seq_ids`` in order.

        Blocks are taken in the order the rounds would take them (round-major,
        then ``seq_ids`` order), so free-list and eviction order match stepping.
        ``takers``: the sequences that take a block, once per block, in that order,
        if the caller keeps them (a decode tracker does); else found here.
        Precondition (checked by the caller): no sequence's last block is shared,
        so no copy-on-write happens, and enough blocks are free.
        """
        if not steps:
            return
        bs = self.block_size
        ntok, tables, fill = self.num_tokens, self.tables, self.fill
        if takers is None:
            n0s = [ntok[s] for s in seq_ids]
            if steps <= bs:         # at most one block each: at round (-n0) % bs, ties in seq_ids order
                order = [(j, idx) for idx, n0 in enumerate(n0s) if (j := (-n0) % bs) < steps]
            else:
                order = [(j, idx) for idx, n0 in enumerate(n0s) for j in range((-n0) % bs, steps, bs)]
            order.sort()
            takers = [seq_ids[idx] for _, idx in order]
        m = len(takers)
        free = self._free
        got = None
        if m and len(free) >= m:                 # the blocks _take_block would pop, in the same order
            got = free[-m:]
            del free[-m:]
            got.reverse()
        elif m and type(self)._take_block is type(self)._plain_take and m <= len(free) + len(self._evictable):
            # the whole free list (popped last first), then the least recently used cached blocks, each evicted
            # as _evict_lru evicts it: the blocks m _take_block calls take, in order (prefix caching takes most
            # of its appends' blocks so, a call per block costing it ~3% of a run)
            got = free[::-1]
            free.clear()
            popitem, block_of, hash_pop = self._evictable.popitem, self._block_of, self._hash_of.pop
            for _ in range(m - len(got)):
                b = popitem(False)[0]
                del block_of[hash_pop(b)]
                got.append(b)
        if got is not None:
            ref = self.ref
            for s, b in zip(takers, got):
                ref[b] = 1
                table = tables[s]
                if table:                       # a block is taken when the last one is full
                    fill[table[-1]] = bs
                table.append(b)
            self.num_allocated += m
        elif type(self)._take_block is type(self)._plain_take:     # (too few blocks: taken up to the error)
            ref = self.ref
            taken = 0
            for s in takers:
                b = free.pop() if free else self._evict_lru()
                if b is None:
                    self.num_allocated += taken
                    raise RuntimeError(OUT_OF_BLOCKS)
                ref[b] = 1
                fill[b] = 0
                taken += 1
                table = tables[s]
                if table:
                    fill[table[-1]] = bs
                table.append(b)
            self.num_allocated += taken
        else:
            for s in takers:
                b = self._take_block()
                table = tables[s]
                if table:
                    fill[table[-1]] = bs
                table.append(b)
        if steps == 1:                          # (one step: each last block one slot on, a new one from 0)
            for s in takers:
                fill[tables[s][-1]] = 0
            for s in seq_ids:
                ntok[s] += 1
                fill[tables[s][-1]] += 1
        else:
            for s in seq_ids:                   # the last block holds the rest of the n1 slots
                n1 = ntok[s] + steps
                ntok[s] = n1
                fill[tables[s][-1]] = (n1 - 1) % bs + 1
        self.used_slots += steps * len(seq_ids)

    def _allocate_evicting(self, table: list[int], lo: int, hi: int, num_tokens: int,
                           hashes: list[int] | None) -> None:
        """``allocate``'s blocks ``lo .. hi-1`` where the free list runs short: each taken as ``_take_block`` takes
        it (free list, else the least recently used evictable block) and its hash registered right after, in
        the same order as one ``_take_block`` call per block (inlined: prefix caching evicts at most admissions)."""
        bs = self.block_size
        free, block_of, hash_of = self._free, self._block_of, self._hash_of
        ref, fill = self.ref, self.fill
        register = self.enable_prefix_caching and hashes
        n_hashes = len(hashes) if register else 0
        evictable = self._evictable
        popitem = evictable.popitem
        used = 0
        for i in range(lo, hi):
            # block by block (a block's hash is registered only after the blocks before it were evicted: it may
            # be the hash one of them held), each evicted as _evict_lru evicts it
            if free:
                b = free.pop()
            elif evictable:
                b = popitem(False)[0]
                del block_of[hash_of.pop(b)]
            else:
                self.num_allocated += i - lo
                self.used_slots += used
                raise RuntimeError(OUT_OF_BLOCKS)
            ref[b] = 1
            f = num_tokens - i * bs
            if f > bs:
                f = bs
            fill[b] = f
            used += f
            if i < n_hashes and f == bs:
                h = hashes[i]
                if h not in block_of:
                    block_of[h] = b
                    hash_of[b] = h
            table.append(b)
        self.num_allocated += hi - lo
        self.used_slots += used

    def slots_needed(self, seq_id: int) -> int:
        """New blocks ``append_slot(seq_id)`` would take (0 or 1)."""
        n = self.num_tokens[seq_id]
        if n % self.block_size == 0:
            return 1
        return 1 if self.ref[self.tables[seq_id][-1]] > 1 else 0

    def blocks_to_append(self, seq_ids: list[int], swapped: bool = False) -> int:
        """New blocks one ``append_slot`` to each of ``seq_ids`` (in order) takes; exact.

        A partial last block shared by ``m`` of them is copied ``m - 1`` times:
        the last sharer writes in place. ``swapped=True`` counts for swapped
        sequences as they will be right after ``swap_in`` (same sharing).
        """
        bs = self.block_size
        tables, lens, ref = ((self.cpu_tables, self.cpu_num_tokens, self.cpu_ref) if swapped
                             else (self.tables, self.num_tokens, self.ref))
        if len(seq_ids) == 1:
            s = seq_ids[0]
            return 1 if lens[s] % bs == 0 or ref[tables[s][-1]] > 1 else 0
        need = 0
        for s in seq_ids:               # no partial last block shared: one block per full last block
            if lens[s] % bs == 0:
                need += 1
            elif ref[tables[s][-1]] > 1:
                break
        else:
            return need
        need = 0
        left: dict[int, int] = {}
        for s in seq_ids:
            if lens[s] % bs == 0:
                need += 1
                continue
            b = tables[s][-1]
            r = left.get(b, ref[b])
            if r > 1:
                need += 1
                left[b] = r - 1
        return need
