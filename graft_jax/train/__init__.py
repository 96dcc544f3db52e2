"""Training engine: train state and step, checkpoints, metrics, preemption signals."""
