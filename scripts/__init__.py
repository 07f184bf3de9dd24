"""Command-line programs, each run as `python -m scripts.<name>` (`grid`, `reproduce_table1`). They share
`experiments` (configs, data, checkpoints, device, provenance, files) and `extrapolation.grid` (rows, selection),
never each other."""
