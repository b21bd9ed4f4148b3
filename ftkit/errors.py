"""ftkit's exception tree.

Every error ftkit raises is an ``FtkitError``; callers never need to catch a vendor's
exception (``openai.RateLimitError``, ``httpx.HTTPError``...): each backend maps those
in one place with :func:`map_vendor_errors`-style context managers of its own.

::

    FtkitError
    ├── ConfigError (ValueError)          the spec or config file is wrong
    ├── DatasetError (ValueError)         a data file is unreadable or invalid
    ├── BackendNotFoundError (LookupError) no installed backend has that name
    ├── BackendError                      a backend or its vendor failed
    │   ├── AuthenticationError           bad or missing credentials: never retried
    │   ├── QuotaExceededError            billing / quota: never retried
    │   ├── BackendUnavailableError       the backend cannot run here (missing package, no GPU, sunset)
    │   └── APIError                      the vendor's API answered with an error
    │       └── RateLimitError            429 after retries were exhausted
    ├── JobError                          something about one job
    │   ├── JobNotFoundError (LookupError)
    │   ├── JobFailedError                the job ended in ``failed``
    │   └── JobTimeoutError               ``wait(timeout=...)`` ran out
    └── EvaluationError                   predictions and data do not fit together
"""

from __future__ import annotations


class FtkitError(Exception):
    """Base class of every error ftkit raises.

    Its message is masked on the way in (:func:`ftkit.redact.redact_text`): a vendor's answer that
    quotes a key or a URL with credentials never reaches a log, a traceback or the terminal.
    """

    def __init__(self, *args: object) -> None:
        from ftkit.redact import redact_text  # here: errors.py is imported by everything, redact by few

        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(FtkitError, ValueError):
    """A JobSpec, config file or backend option is invalid."""


class DatasetError(FtkitError, ValueError):
    """A data file cannot be read or failed validation.

    Attributes:
        report: the :class:`ftkit.data.ValidationReport` when validation failed, else None.
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class BackendNotFoundError(FtkitError, LookupError):
    """No installed backend answers to the requested name."""


class BackendError(FtkitError):
    """A backend or the service behind it failed."""


class AuthenticationError(BackendError):
    """Credentials are missing or were refused. Never retried."""


class QuotaExceededError(BackendError):
    """The account has no quota or credit left. Never retried."""


class BackendUnavailableError(BackendError):
    """The backend cannot run here: a package, a device or the service itself is missing."""


class APIError(BackendError):
    """The vendor's API answered with an error.

    Attributes:
        status_code: the HTTP status when there was one.
        code: the vendor's error code when it gave one.
    """

    def __init__(self, message: str, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class RateLimitError(APIError):
    """The vendor kept answering 429 after ftkit's retries."""


class JobError(FtkitError):
    """Base class of errors about one job."""


class JobNotFoundError(JobError, LookupError):
    """No job with that id is in the registry."""


class JobFailedError(JobError):
    """The job ended with status ``failed``."""


class JobTimeoutError(JobError):
    """``FineTuneJob.wait(timeout=...)`` ran out before the job finished."""


class EvaluationError(FtkitError):
    """Predictions and reference data cannot be evaluated together."""
