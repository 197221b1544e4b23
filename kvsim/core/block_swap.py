"""Swapping block tables between the GPU pool and the CPU pool, keeping their sharing.

A mixin of :class:`kvsim.core.block_manager.PagedBlockManager` (it uses the
manager's GPU and CPU tables, ref counts, fills, free lists, ``_take_block``
and ``_release``). Each distinct block moves once, as one ``(from, to)`` pair.
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
        return self._distinct(self.tables, seq_ids) <= len(self._cpu_free)

    def swap_out(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """Move the sequences' blocks to the CPU pool, keeping their sharing; return ``(gpu, cpu)`` pairs.

        Invariant: each shared GPU block is copied once; sequence lengths and
        table shapes are preserved for ``swap_in``.
        """
        mapping: dict[int, int] = {}
        tables, ntok, fill, release = self.tables, self.num_tokens, self.fill, self._release
        cpu_free, cpu_fill, cpu_ref = self._cpu_free, self.cpu_fill, self.cpu_ref
        for s in seq_ids:
            table = tables.pop(s)
            n = ntok.pop(s)
            cpu_table = []
            for b in table:
                c = mapping.get(b)
                if c is None:
                    c = cpu_free.pop()
                    mapping[b] = c
                    cpu_fill[c] = fill[b]
                cpu_ref[c] += 1
                cpu_table.append(c)
            for b in reversed(table):
                release(b)
            self.cpu_tables[s] = cpu_table
            self.cpu_num_tokens[s] = n
        return list(mapping.items())

    def blocks_to_swap_in(self, seq_ids: list[int]) -> int:
        return self._distinct(self.cpu_tables, seq_ids)

    def swap_in(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """Inverse of ``swap_out``: return ``(cpu, gpu)`` pairs; frees the CPU blocks."""
        mapping: dict[int, int] = {}
        take, fill, ref = self._take_block, self.fill, self.ref
        cpu_free, cpu_fill, cpu_ref = self._cpu_free, self.cpu_fill, self.cpu_ref
        used = 0
        for s in seq_ids:
            cpu_table = self.cpu_tables.pop(s)
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
