"""Errors about the user's input: `train.py` prints their message as one `error: ...` line (exit 2).

Raise `InputError` (or a subclass, e.g. `extrapolation.SettingsError`) for a config value, option, data
folder or file, image or checkpoint that is wrong, with a message that names the value or file and says
what to do. Constructors of config classes raise it for bad values. Anything else is treated as a bug and
keeps its traceback.
"""


class InputError(ValueError):
    """A problem with the user's inputs (config values, files, sizes, checkpoints); the message says what to do."""


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder that does not exist (both an `InputError` and a `FileNotFoundError`)."""
