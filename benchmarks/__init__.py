"""OmniQ's benchmark suite: ``python -m benchmarks [--quick]`` (see benchmarks/suite.py)."""
