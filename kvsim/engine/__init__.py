"""The real paged engine: torch models + Triton kernels executing kvsim.core StepPlans.

Importing it needs torch (and triton for the "triton" attention backend). The
scheduling and allocation are *not* here: the engine runs the same
``kvsim.core`` scheduler and block manager as the simulator; it only executes
their plans on a device and measures wall time.
"""
