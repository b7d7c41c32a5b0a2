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


class ServiceUnavailableError(SeqrecError):
    """A server (MLflow) did not answer: nothing was decided; the same call may succeed later."""


# `python -m pipeline` exits with this (EX_TEMPFAIL from sysexits.h) when a server did not
# answer, so a caller (the retrain DAG) retries instead of failing for good.
EXIT_RETRY = 75
# Raised by requests/urllib3/http.client when a server is down or drops the connection.
_UNREACHABLE_NAMES = {"ConnectionError", "MaxRetryError", "NewConnectionError", "ProtocolError",
                      "RemoteDisconnected", "ChunkedEncodingError"}


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` or anything it was raised from is a failed connection to a server.

    MLflow re-raises a failed request as a plain `MlflowException("API request to ... failed
    with exception ...")`, keeping the connection error only as the exception's context.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ServiceUnavailableError | ConnectionError):
            return True
        if type(current).__name__ in _UNREACHABLE_NAMES:
            return True
        current = current.__cause__ or current.__context__
    return False


def raise_if_unreachable(exc: BaseException) -> None:
    """Re-raise `exc` as ServiceUnavailableError when it is a failed connection, so code that
    reads an MLflow error as "not found" does not mistake an outage for an empty registry."""
    if is_unreachable(exc):
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        message = f"a server did not answer (retry later): {first_line}"
        raise ServiceUnavailableError(message) from exc
