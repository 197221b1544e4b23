"""What a step draws: which logits rows feed independent draws and which beam search, the index that gathers them
(sent to the GPU without waiting for it), their logits (the LM head on those rows, padded to a decode-graph batch
size) and the draws themselves, for :class:`kvsim.engine.runner.ModelRunner` (:class:`DrawsMixin`: its model, token
lists, beam scores and sampling settings)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from kvsim.core.sequence import SequenceGroup
from kvsim.engine import sampling
from kvsim.graph_sizes import padded

if TYPE_CHECKING:
    from kvsim.engine.runner import StepBatch


def sampling_rows(batch: StepBatch):
    """(independent draws' logits rows, their (group, seq id), first beam steps, beam steps) of a step."""
    draw_rows: list[int] = []
    draw_to: list[tuple[SequenceGroup, int]] = []
    beam_first: list[tuple[int, SequenceGroup]] = []
    beam_next: list[tuple[int, SequenceGroup]] = []
    i = 0
    for _, g in batch.prefill_rows:          # one logits row per group; every sequence draws from it
        if g.sampling(True) == "beam_first":
            beam_first.append((i, g))
        else:
            draw_rows += [i] * len(g.seqs)
            draw_to += [(g, s.seq_id) for s in g.seqs]
        i += 1
    for _, g in batch.decode_rows:           # one row per sequence
        kind = g.sampling(False)             # None: finished, kept in a static batch: nothing to draw
        if kind == "beam":
            beam_next.append((i, g))
        elif kind == "draw":
            draw_rows += range(i, i + len(g.seqs))
            draw_to += [(g, s.seq_id) for s in g.seqs]
        i += len(g.seqs)
    return draw_rows, draw_to, beam_first, beam_next


class DrawsMixin:
    """The step's logits and draws (reads ``model``, ``logit_sizes``, ``tokens``, ``beam_scores``, ``mode``,
    ``temperature``, ``top_p``, ``gen`` and ``seq_tokens`` of the runner)."""

    def _logits(self, hidden: torch.Tensor, batch: StepBatch) -> torch.Tensor | None:
        """float32 logits of the hidden rows the step samples from (each finished prompt's last row, every
        decode row), None when it samples none. With decode graphs (and ``runtime.pad_logits``, the default) the
        LM head runs on those rows padded (the last one repeated) to the next graph batch size, the extra rows
        dropped after, so its GEMM has a row count the calibration's decode grid timed. Why: in
        validation/H100-async-1207b a 3-row decode step, which replays the 4-row graph, took 0.14 ms more GPU time
        than a 4-row step at similar contexts, and 7 rows 0.08 ms more than 8 (H200-async: ~0.1 ms; OPT-13B, half
        the LM head's weights: 0.02 ms); the LM head and the draws after it are the parts of such a step that ran
        at its own row count. Timed alone by rows (``benchmarks/engine/lm_head_rows.py``, another H100,
        ``benchmarks/engine/results_H100/lm_head_1207``) the head is not that cause at 3 rows (as fast as at 4,
        either model); at 7 rows Llama-3-8B's head took 0.052 ms more than at 8, and padded to 8 0.025 ms more;
        elsewhere padding moves it by microseconds. Kept: its one measured effect is in its favour."""
        rows = [r for r, _ in batch.prefill_rows]
        for r, g in batch.decode_rows:
            rows.extend(range(r, r + len(g.seqs)))
        if not rows:
            return None
        m = len(rows)
        b = padded(m, self.logit_sizes)
        if b > m:
            rows += [rows[-1]] * (b - m)
        logits = self.model.compute_logits(hidden[rows_index(rows, hidden.device)]).float()
        return logits[:m] if b > m else logits

    def _sample(self, logits: torch.Tensor, batch: StepBatch) -> dict[int, list[int]]:
        """Every independent draw of the step in one batched call (one device sync), then beams."""
        parents: dict[int, list[int]] = {}
        draw_rows, draw_to, beam_first, beam_next = sampling_rows(batch)
        if draw_rows:
            for (g, sid), t in zip(draw_to, self._draw(draw_logits(logits, draw_rows))):
                self.seq_tokens(g, sid).append(t)
        for k, firsts in by_width(beam_first).items():      # one batched call per beam width
            rows = rows_index([r for r, _ in firsts], logits.device)
            for (_, g), toks, scores in zip(firsts, *sampling.beam_first_steps(logits[rows], k)):
                self.beam_scores[g.group_id] = scores
                for s, t in zip(g.seqs, toks):
                    self.seq_tokens(g, s.seq_id).append(t)
        for k, nexts in by_width(beam_next).items():
            rows = rows_index([r + j for r, _ in nexts for j in range(k)], logits.device)
            out = sampling.beam_steps(logits[rows], [self.beam_scores[g.group_id] for _, g in nexts])
            for (_, g), par, toks, scores in zip(nexts, *out):
                self.beam_scores[g.group_id] = scores
                old = [self.tokens[s.seq_id] for s in g.seqs]
                for s, p, t in zip(g.seqs, par, toks):
                    self.tokens[s.seq_id] = old[p] + [t]
                parents[g.group_id] = par
        return parents

    def _draw(self, rows: torch.Tensor) -> list[int]:
        return sampling.sample_rows(rows, self.mode, self.temperature, self.top_p, self.gen)


def draw_logits(logits: torch.Tensor, draw_rows: list[int]) -> torch.Tensor:
    """The logits rows of the step's independent draws (all of them, in order, without a gather when so)."""
    if draw_rows == list(range(logits.shape[0])):
        return logits
    return logits[rows_index(draw_rows, logits.device)]


def rows_index(rows: list[int], device: torch.device) -> torch.Tensor:
    """Row numbers as an index on ``device``, sent as the step's other inputs are (``non_blocking``: staged, no
    wait for the GPU). ``torch.tensor(rows, device=...)`` copies them with a stream synchronisation, and so may
    PyTorch's own move of a list or CPU index: the host then waits there for the whole forward pass. Launched
    overlapped (:meth:`kvsim.engine.runner.ModelRunner.launch`), a step lost its overlap there: every step of a static batch with a
    finished row (padded, drawing nothing: the only draws that needed a gather) was measured with its GPU part
    3-4% above the calibration's and its host part at 0.02 ms (validation/H100-async, v25, at commit 3670968)."""
    return torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True)


def by_width(groups: list[tuple[int, SequenceGroup]]) -> dict[int, list[tuple[int, SequenceGroup]]]:
    """Beam groups (first logits row, group) by beam width, in order."""
    out: dict[int, list[tuple[int, SequenceGroup]]] = {}
    for r, g in groups:
        out.setdefault(len(g.seqs), []).append((r, g))
    return out
