"""Traffik's benchmark: throttle overhead against the floor, all measured in one run (`python -m benchmarks`)."""
