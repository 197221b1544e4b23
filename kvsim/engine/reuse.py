"""Engine parts kept from one short engine run to the next in one process: the KV cache, the CUDA graphs
captured over it, and which warm-ups have run.

Building a :class:`~kvsim.engine.engine.RealEngine` on a GPU captures its decode graphs (one per batch size)
and prefill/mixed graphs (one per token count of the ladder) and runs the warm-up steps: 4.3 s and 1.3 s for
OPT-13B on the H200 (an engine run's ``cuda_graph_capture_s`` and ``warmup_s``). ``kvsim calibrate`` makes
about thirty short engine runs after its grids (the step overhead, the serving fit, the prefill overhead fits),
so most of their time went into building the same engine again. An :class:`EngineParts` passed to each
run keeps what does not depend on the run's requests:

* the KV cache and the graphs over it, for the next run whose settings are the same (:func:`parts_key`)
  and whose block pool fits in the kept cache. A run only ever touches the block ids its own block manager
  hands out (below its ``num_gpu_blocks``), and the graphs replay the same kernels over tables of the same
  width, so a step costs what it costs in a freshly built engine. :meth:`EngineParts.reserve` sizes the
  cache for the largest run planned, so it is built once;
* the warm-ups already run (Triton's compiled kernels are the process's, not the engine's): a run whose
  warm-up arguments were seen skips it.

Engine runs that are measurements of a user's scenario (``kvsim engine``, ``kvsim validate``) build their
own engine, as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Kept:
    key: tuple
    cache: object                      # kvsim.engine.kv_cache.KVCache
    graphs: object | None              # DecodeGraphs
    prefill_graphs: object | None      # PrefillGraphs


@dataclass
class EngineParts:
    """What consecutive engine runs share (module doc). ``min_blocks``: build the cache at least this big."""
    min_blocks: int = 0
    kept: Kept | None = None
    warmed: set = field(default_factory=set)
    builds: int = 0                    # caches + graphs built
    reuses: int = 0                    # runs that replayed kept ones

    def reserve(self, blocks: int) -> None:
        """The next build holds at least ``blocks`` blocks (the largest run planned)."""
        self.min_blocks = max(self.min_blocks, int(blocks))

    def take(self, key: tuple, blocks: int) -> Kept | None:
        """The kept parts when their settings are ``key`` and their cache holds ``blocks``; else None, and
        the old parts are dropped first so their memory is free for the new build."""
        k = self.kept
        if k is not None and k.key == key and k.cache.num_blocks >= blocks:
            self.reuses += 1
            return k
        self.drop()
        return None

    def keep(self, key: tuple, cache, graphs, prefill_graphs) -> None:
        self.kept = Kept(key, cache, graphs, prefill_graphs)
        self.builds += 1

    def build_blocks(self, blocks: int) -> int:
        return max(int(blocks), self.min_blocks)

    def drop(self) -> None:
        if self.kept is None:
            return
        self.kept = None
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def kept_bytes(self) -> int:
        """GPU bytes of the kept KV cache (freed before a bigger one is built)."""
        return self.kept.cache.bytes if self.kept is not None else 0

    def warm(self, key: tuple) -> bool:
        """True when a warm-up with arguments ``key`` already ran in this process (then skip it); records it."""
        if key in self.warmed:
            return True
        self.warmed.add(key)
        return False


def parts_key(model, **settings) -> tuple:
    """The model (by identity) and every setting the kept cache and graphs depend on besides the pool's size."""
    return (id(model),) + tuple(sorted(settings.items()))
