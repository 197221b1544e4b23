"""GPU calibration: measure the grids the calibrated cost model interpolates (needs torch, triton, CUDA)."""
