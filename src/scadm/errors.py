"""Exceptions the library raises for bad input; the CLI prints them as one line."""


class ScadmError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class InputError(ScadmError, ValueError):
    """A bad file or argument: the message names it and says what is wrong."""


class CheckpointError(ScadmError):
    """A checkpoint that is missing, corrupt or belongs to another model."""
