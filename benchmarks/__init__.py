"""Benchmarks of the service (see README.md); ``python -m benchmarks.run`` is the load benchmark."""

import time


def log(message: str) -> None:
    """A run's progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
