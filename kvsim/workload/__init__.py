"""Workloads: request lengths, arrival processes, dataset/trace readers, and the builder.

Entry point: :func:`build_workload` turns a :class:`WorkloadConfig` into a list
of :class:`kvsim.core.request.RequestSpec` (deterministic for a given rng seed).
"""
from kvsim.workload.arrivals import burst_arrivals, gamma_arrivals, poisson_arrivals
from kvsim.workload.build import build_workload, effective_max_len
from kvsim.workload.config import ARRIVALS, DATASETS, WorkloadConfig
from kvsim.workload.lengths import (
    ALPACA,
    SHAREGPT,
    SYNTHETIC,
    SYNTHETIC_NAMES,
    LognormalLengths,
    cap_lengths,
    lognormal_lengths,
    sample_fixed,
    sample_synthetic,
    sample_uniform,
)
from kvsim.workload.sharegpt import load_sharegpt, sample_sharegpt
from kvsim.workload.trace import Trace, read_trace

__all__ = [
    "ALPACA", "ARRIVALS", "DATASETS", "SHAREGPT", "SYNTHETIC", "SYNTHETIC_NAMES",
    "LognormalLengths", "Trace", "WorkloadConfig",
    "build_workload", "burst_arrivals", "cap_lengths", "effective_max_len", "gamma_arrivals",
    "load_sharegpt", "lognormal_lengths", "poisson_arrivals", "read_trace",
    "sample_fixed", "sample_sharegpt", "sample_synthetic", "sample_uniform",
]
