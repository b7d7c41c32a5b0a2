"""Errors a user can act on: printed as one line by the CLI, never as a traceback."""


class SeqrecError(Exception):
    """Base class: the message names the file, the row or key, and the rule."""


class InputError(SeqrecError):
    """An input file cannot be read as events at all (empty, missing column, not text)."""


class BatchValidationError(SeqrecError):
    """A batch-level data rule failed; the pipeline must stop."""


class ModelError(SeqrecError):
    """A model folder or checkpoint is missing or does not match."""


class RegistryError(SeqrecError):
    """The MLflow registry is in a state the command cannot act on."""
