"""Swapping block tables between the GPU pool and the CPU pool, keeping their sharing.

A mixin of :class:`kvsim.core.block_manager.PagedBlockManager` (it uses the
manager's GPU and CPU tables, ref counts, fills, free lists, ``_take_block``
and ``_release``). Each distinct block moves once, as one ``(from, to)`` pair. A parallel-sampling group
(a shared prompt, then each sequence's own blocks) moves a group at a time: :mod:`kvsim.core.block_group`.
"""
from __future__ import annotations


class SwapMixin:
    """GPU <-> CPU moves of :class:`~kvsim.core.block_manager.PagedBlockManager` (see the module doc)."""

    def _distinct(self, tables: dict[int, list[int]], seq_ids: list[int]) -> int:
        """Distinct blocks in the sequences' tables."""
        if len(seq_ids) == 1:
            return len(set(tables[seq_ids[0]]))
        return len(set().union(*map(tables.__getitem__, seq_ids)))

    def can_swap_out(self, seq_ids: list[int]) -> bool:
        free, tables = len(self._cpu_free), self.tables
        if sum(map(len, map(tables.__getitem__, seq_ids))) <= free:
            return True             # (the table entries bound the distinct blocks: no set needed)
        return self._distinct(tables, seq_ids) <= free

    def swap_out(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """Move the sequences' blocks to the CPU pool, keeping their sharing; return ``(gpu, cpu)`` pairs.

        Invariant: each shared GPU block is copied once; sequence lengths and
        table shapes are preserved for ``swap_in``. CPU blocks are taken (and
        GPU blocks released, last block first) sequence by sequence, in table order.
        """
        plain = type(self)._release is type(self)._plain_release     # not a subclass's own release
        if plain and len(seq_ids) > 1:
            pairs = self._group_swap_out(seq_ids)
            if pairs is not None:
                return pairs
        mapping: dict[int, int] = {}
        tables, ntok, fill = self.tables, self.num_tokens, self.fill
        cpu_free, cpu_fill, cpu_ref = self._cpu_free, self.cpu_fill, self.cpu_ref
        for s in seq_ids:
            table = tables.pop(s)
            n = ntok.pop(s)
            m = len(table)
            if not mapping and m:           # nothing mapped yet: each block (named once) takes the next CPU block
                cpu_table = cpu_free[-m:]
                del cpu_free[-m:]
                cpu_table.reverse()         # the blocks m pops would give, in that order
                mapping.update(zip(table, cpu_table))
                for c, b in zip(cpu_table, table):
                    cpu_fill[c] = fill[b]
                    cpu_ref[c] = 1          # (a free CPU block holds no reference)
            else:
                cpu_table = []
                for b in table:
                    c = mapping.get(b)
                    if c is None:
                        c = cpu_free.pop()
                        mapping[b] = c
                        cpu_fill[c] = fill[b]
                    cpu_ref[c] += 1
                    cpu_table.append(c)
            if plain:
                self._release_all(reversed(table))
            else:
                for b in reversed(table):
                    self._release(b)
            self.cpu_tables[s] = cpu_table
            self.cpu_num_tokens[s] = n
        return list(mapping.items())

    def blocks_to_swap_in(self, seq_ids: list[int]) -> int:
        return self._distinct(self.cpu_tables, seq_ids)

    def swap_in(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """Inverse of ``swap_out``: return ``(cpu, gpu)`` pairs; frees the CPU blocks."""
        plain = type(self)._take_block is type(self)._plain_take     # not a subclass's own take
        if plain and len(seq_ids) > 1:
            pairs = self._group_swap_in(seq_ids)
            if pairs is not None:
                return pairs
        mapping: dict[int, int] = {}
        take, fill, ref, free = self._take_block, self.fill, self.ref, self._free
        cpu_free, cpu_fill, cpu_ref = self._cpu_free, self.cpu_fill, self.cpu_ref
        used = 0
        for s in seq_ids:
            cpu_table = self.cpu_tables.pop(s)
            m = len(cpu_table)
            if plain and not mapping and 0 < m <= len(free):     # nothing mapped yet, and the free list serves every block
                table = free[-m:]                       # (what m _take_block calls would pop, in that order)
                del free[-m:]
                table.reverse()
                mapping.update(zip(cpu_table, table))
                for c, b in zip(cpu_table, table):
                    ref[b] = 1
                    fill[b] = f = cpu_fill[c]
                    used += f
                    r = cpu_ref[c] - 1
                    cpu_ref[c] = r
                    if r == 0:
                        cpu_free.append(c)
                self.num_allocated += m
            else:
                table = []
                for c in cpu_table:
                    b = mapping.get(c)
                    if b is None:
                        b = take()
                        mapping[c] = b
                        fill[b] = f = cpu_fill[c]
                        used += f
                    else:
                        ref[b] += 1
                    table.append(b)
                    r = cpu_ref[c] - 1
                    cpu_ref[c] = r
                    if r == 0:
                        cpu_free.append(c)
            self.tables[s] = table
            self.num_tokens[s] = self.cpu_num_tokens.pop(s)
        self.used_slots += used
        return list(mapping.items())

