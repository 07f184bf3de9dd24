"""Errors about the user's input: `train.py` prints their message as one `error: ...` line (exit 2).

Raise `InputError` for a config value, data folder or file, image or checkpoint that is wrong, with a
message that names the value or file and says what to do. Anything else is treated as a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """A problem with the user's inputs (config values, files, sizes, checkpoints); the message says what to do."""

    latest: "InputError | None" = None  # the last one created: jsonargparse reports some only by their text

    def __init__(self, *args):
        super().__init__(*args)
        InputError.latest = self


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder that does not exist (both an `InputError` and a `FileNotFoundError`)."""
