"""Command-line entry point: `python train.py {fit,validate,test,predict} --config configs/rot.yaml`."""
import sys

from lightning.pytorch.cli import LightningCLI


def main(args=None, run: bool = True):
    """`run=False` builds model, datamodule and trainer from a config without a subcommand."""
    return LightningCLI(
        save_config_kwargs={"overwrite": True},  # the config lands in the run's own version folder
        parser_kwargs={"parser_mode": "omegaconf"},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    from datamodules.frame_pairs import InputError

    try:
        main()
    except InputError as err:  # bad user input: one line that says what to fix, not a traceback
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
