"""What a request asks for, before any scheduling state exists."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload.

    ``prompt_len`` includes ``prefix_len`` shared-prefix tokens (the first
    ``prefix_len`` tokens of the prompt are the prefix identified by
    ``prefix_id``; ``prefix_id`` is -1 when the request has no shared prefix).
    ``n`` is the number of parallel samples; ``beam_width`` > 1 means beam search
    with that many beams (then ``n`` must be 1). ``output_len`` is the number of
    tokens each sample/beam generates (the workload knows it; EOS is not modelled).
    """

    request_id: int
    arrival_s: float
    prompt_len: int
    output_len: int
    n: int = 1
    beam_width: int = 1
    prefix_id: int = -1
    prefix_len: int = 0

    @property
    def num_seqs(self) -> int:
        """Number of sequences the request runs at once (samples or beams)."""
        return self.beam_width if self.beam_width > 1 else self.n

    @property
    def total_len(self) -> int:
        return self.prompt_len + self.output_len
