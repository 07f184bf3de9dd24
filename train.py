"""Command-line entry point: `python train.py {fit,validate,test,predict} --config configs/rot.yaml`.

The logic (run folders, checkpoint checks, one-line errors) lives in `cli.py`."""
import sys

from cli import main, run  # noqa: F401  (`train.main` builds the CLI in-process: tests, scripts)

if __name__ == "__main__":
    sys.exit(run())
