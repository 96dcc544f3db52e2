"""Benchmarks of the training step: FLOPs accounting, timing and memory, the stages' steps on
synthetic batches, and the PyTorch reference (experiments/bench_train.py, experiments/gpu_check.py)."""
