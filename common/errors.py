"""Error types raised across the project.

Every message says what was wrong, the value seen, and how to fix it (STYLE.md "Errors").
"""


class DeepRetrievalError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(DeepRetrievalError):
    """A config value is missing, malformed or out of range."""


class DatasetError(DeepRetrievalError):
    """A data set folder is missing or not in the expected layout."""


class SchemaVersionError(DeepRetrievalError):
    """A wire message carries a schema version this code does not read."""


class SchemaError(DeepRetrievalError):
    """A wire message is missing a field or has one of the wrong type."""


class IndexMissingError(DeepRetrievalError):
    """A search index was asked for but has not been built."""


class BackendUnavailable(DeepRetrievalError):
    """A search backend could not answer (after retries): the reward is `unavailable`.

    Args:
        http_status: the HTTP status of the answer that failed, when there was one (for spans).
    """

    def __init__(self, message: str, *, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class RateLimited(BackendUnavailable):
    """The API refused a request for exceeding its rate limit (HTTP 429).

    Args:
        retry_after_s: seconds the server asked us to wait, when it said so.
    """

    def __init__(self, message: str, retry_after_s: float | None = None, *, http_status: int | None = None):
        super().__init__(message, http_status=http_status)
        self.retry_after_s = retry_after_s


class QuerySyntaxError(DeepRetrievalError):
    """A search query could not be parsed by the engine's query language.

    Args:
        http_status: the HTTP status of the refusal, for HTTP engines (for spans).
    """

    def __init__(self, message: str, *, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class ModelError(DeepRetrievalError):
    """A model checkpoint could not be found, converted or loaded."""


class EngineError(DeepRetrievalError):
    """A generation engine could not start, generate, or load a weights folder."""


class TraceFileError(DeepRetrievalError):
    """A trace file (JSON lines of spans) is missing, empty, or holds no valid span."""
