"""Development-only tools: the embedded stack, the synthetic data generator, make run."""
