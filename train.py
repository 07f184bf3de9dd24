"""Command-line entry point: `python train.py {fit,validate,test,predict} --config configs/rot.yaml`."""
from lightning.pytorch.cli import LightningCLI


def main(args=None):
    return LightningCLI(
        save_config_kwargs={"overwrite": True},  # the config lands in the run's own version folder
        parser_kwargs={"parser_mode": "omegaconf"},
        args=args,
    )


if __name__ == "__main__":
    main()
