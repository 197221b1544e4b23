"""Swapping block tables between the GPU pool and the CPU pool, keeping their sharing.

A mixin of :class:`kvsim.core.block_manager.PagedBlockManager` (it uses the
manager's GPU and CPU tables, ref counts, fills, free lists, ``_take_block``
and ``_release``). Each distinct block moves once, as one ``(from, to)`` pair.
"""
from __future__ import annotations


class SwapMixin:
    """GPU <-> CPU moves of :class:`~kvsim.core.block_manager.PagedBlockManager` (see the module doc)."""

    def _unique(self, tables: list[list[int]]) -> list[int]:
        seen: dict[int, None] = {}
        for t in tables:
            for b in t:
                seen[b] = None
        return list(seen)

    def can_swap_out(self, seq_ids: list[int]) -> bool:
        return len(self._unique([self.tables[s] for s in seq_ids])) <= len(self._cpu_free)

    def swap_out(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """Move the sequences' blocks to the CPU pool, keeping their sharing; return ``(gpu, cpu)`` pairs.

        Invariant: each shared GPU block is copied once; sequence lengths and
        table shapes are preserved for ``swap_in``.
        """
        mapping: dict[int, int] = {}
        for s in seq_ids:
            table = self.tables.pop(s)
            n = self.num_tokens.pop(s)
            cpu_table = []
            for b in table:
                c = mapping.get(b)
                if c is None:
                    c = self._cpu_free.pop()
                    mapping[b] = c
                    self.cpu_fill[c] = self.fill[b]
                self.cpu_ref[c] += 1
                cpu_table.append(c)
            for b in reversed(table):
                self._release(b)
            self.cpu_tables[s] = cpu_table
            self.cpu_num_tokens[s] = n
        return list(mapping.items())

    def blocks_to_swap_in(self, seq_ids: list[int]) -> int:
        return len(self._unique([self.cpu_tables[s] for s in seq_ids]))

    def swap_in(self, seq_ids: list[int]) -> list[tuple[int, int]]:
        """Inverse of ``swap_out``: return ``(cpu, gpu)`` pairs; frees the CPU blocks."""
        mapping: dict[int, int] = {}
        for s in seq_ids:
            cpu_table = self.cpu_tables.pop(s)
            table = []
            for c in cpu_table:
                b = mapping.get(c)
                if b is None:
                    b = self._take_block()
                    mapping[c] = b
                    self.fill[b] = self.cpu_fill[c]
                    self.used_slots += self.cpu_fill[c]
                else:
                    self.ref[b] += 1
                table.append(b)
                self.cpu_ref[c] -= 1
                if self.cpu_ref[c] == 0:
                    self._cpu_free.append(c)
            self.tables[s] = table
            self.num_tokens[s] = self.cpu_num_tokens.pop(s)
        return list(mapping.items())
