"""Benchmarks, each run as `python -m benchmarks.<name>`; they load configs, data and checkpoints through
`experiments`."""
