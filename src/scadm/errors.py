"""Exceptions the library raises for bad input; the CLI prints them as one line."""


class ScadmError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class InputError(ScadmError, ValueError):
    """A bad file or argument: the message names it and says what is wrong."""


class CheckpointError(ScadmError):
    """A checkpoint that is missing, corrupt or belongs to another model."""


class TrainingError(ScadmError):
    """A training run that cannot usefully continue: its weights became NaN or infinite."""


class RenderError(ScadmError):
    """A render whose result holds NaN or infinite values: refused rather than saved as black."""


class ScadmWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as one line."""
