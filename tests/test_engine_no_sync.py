"""Host lists sent to the device without a stream synchronisation: the beams' scores in a beam step, the block ids
of a copy-on-write and of a staged swap. ``torch.tensor(..., device=cuda)`` waits for every kernel queued before it
(in a step: the forward pass, or an overlapped step's predecessor), so these go ``non_blocking`` as the step's
other inputs do (:func:`kvsim.engine.draws.rows_index`). On the CPU the calls are checked not to build a tensor on
a device directly; on a GPU, under PyTorch's sync debug mode."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvsim.engine import sampling  # noqa: E402
from kvsim.engine.kv_cache import KVCache  # noqa: E402

CUDA = torch.cuda.is_available()


@pytest.fixture
def no_device_tensors(monkeypatch):
    """``torch.tensor`` refuses a ``device``: a list made on the host is moved with ``.to(non_blocking=True)``."""
    made = torch.tensor

    def strict(*a, **kw):
        assert "device" not in kw, "torch.tensor(..., device=...) synchronises the stream"
        return made(*a, **kw)
    monkeypatch.setattr(torch, "tensor", strict)


def _beam_inputs(device, groups=3, width=2, vocab=50):
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = torch.randn(groups * width, vocab, generator=g).to(device)
    scores = [[-0.5 * j - i for j in range(width)] for i in range(groups)]
    return logits, scores


def _reference_beams(logits, scores):
    """float64 beam step on the host: per group, the ``k`` best (beam, token) by cumulative log-probability."""
    lp = torch.log_softmax(logits.double().cpu(), dim=-1)
    k, vocab = len(scores[0]), logits.shape[-1]
    out = []
    for i, sc in enumerate(scores):
        flat = (lp[i * k:(i + 1) * k] + torch.tensor(sc, dtype=torch.float64)[:, None]).reshape(-1)
        top = torch.topk(flat, k).indices.tolist()
        out.append(([t // vocab for t in top], [t % vocab for t in top]))
    return out


def test_a_beam_step_sends_its_scores_without_a_sync_and_still_ranks_the_beams(no_device_tensors):
    logits, scores = _beam_inputs("cpu")
    parents, tokens, values = sampling.beam_steps(logits, scores)
    assert [(p, t) for p, t in zip(parents, tokens)] == _reference_beams(logits, scores)
    assert all(a >= b for row in values for a, b in zip(row, row[1:]))      # best first


def test_copy_on_write_and_staged_swaps_send_their_ids_without_a_sync(no_device_tensors):
    c = KVCache(2, 9, 4, 2, 8, 5, torch.float32, torch.device("cpu"), "torch", staged_swap=True)
    c.planes.copy_(torch.randn_like(c.planes))
    before = c.planes.clone()
    c.copy([(1, 4)])
    assert torch.equal(c.planes[:, 4], before[:, 1])
    c.swap_out([(2, 0), (3, 1)])
    c.swap_in([(0, 7), (1, 8)])
    assert torch.equal(c.planes[:, 7], before[:, 2]) and torch.equal(c.planes[:, 8], before[:, 3])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_on_a_gpu_none_of_them_synchronises(monkeypatch):
    """PyTorch's sync debug mode raises on any synchronising call: the beam step up to its one copy back to the
    host (left out here), a copy-on-write, a staged swap out and in."""
    monkeypatch.setattr(sampling, "_to_host", lambda i, v: ([[0] * i.shape[1]] * i.shape[0], [[0.0]] * i.shape[0]))
    logits, scores = _beam_inputs("cuda")
    c = KVCache(2, 9, 4, 2, 8, 5, torch.float16, torch.device("cuda"), "torch", staged_swap=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sampling.beam_steps(logits, scores)
        c.copy([(1, 4)])
        c.swap_out([(2, 0), (3, 1)])
        c.swap_in([(0, 7), (1, 8)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
