"""How a failure reaches the command line: one line on stderr and a documented exit code.

One handler wraps the whole ``ftkit`` app (:class:`FtkitGroup` is its click group, so it covers
every command, the ones that plugins mount included, and typer's test runner goes through it
too). ``FTKIT_DEBUG=1`` or ``ftkit --debug ...`` adds the traceback. Typer's own usage errors
keep their exit code 2 and their usual form.

=====  =====================================================================================
code   meaning
=====  =====================================================================================
0      success
1      the data is wrong: ``validate`` found errors; a line that split/convert/train cannot
       use; predictions that do not fit the data; text that is not UTF-8; nesting too deep
2      the command cannot run as given: usage errors, a bad config (or an unknown section),
       an unknown backend, target or job, a path that does not exist or is a folder, an
       output that exists (without ``--force``)
3      a backend or its service failed: credentials refused, quota, rate limits, the API,
       a backend that cannot run here, a job that failed or timed out, a network error
4      this machine stopped it: a full disk (ENOSPC), a file-size or disk quota, a read-only
       or forbidden folder (EROFS, EACCES), an I/O error, the job registry's SQLite errors,
       memory
70     a bug in ftkit (the line says how to get the traceback to report it)
130    interrupted (Ctrl-C)
=====  =====================================================================================
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import traceback
from enum import IntEnum
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.text import Text

from ftkit.errors import (
    BackendError,
    BackendNotFoundError,
    ConfigError,
    DatasetError,
    EvaluationError,
    FtkitError,
    JobError,
    JobNotFoundError,
)
from ftkit.redact import redact_text

try:  # typer vendors click since 0.2x; its usage errors derive from TyperException
    from typer.exceptions import TyperException as _TyperUsageError
except ImportError:  # pragma: no cover - older typer on the real click
    from click.exceptions import ClickException as _TyperUsageError  # type: ignore[assignment]

DEBUG_ENV = "FTKIT_DEBUG"
_DEBUG_META = "ftkit.debug"


class ExitCode(IntEnum):
    """The ``ftkit`` command's exit codes (the module docstring has the full table)."""

    OK = 0
    DATA = 1
    USAGE = 2
    BACKEND = 3
    ENVIRONMENT = 4
    BUG = 70
    INTERRUPTED = 130


# Most specific first: JobNotFoundError is a JobError but a usage problem.
_FTKIT_CODES: tuple[tuple[type[FtkitError], ExitCode], ...] = (
    (JobNotFoundError, ExitCode.USAGE),
    (BackendNotFoundError, ExitCode.USAGE),
    (ConfigError, ExitCode.USAGE),
    (DatasetError, ExitCode.DATA),
    (EvaluationError, ExitCode.DATA),
    (BackendError, ExitCode.BACKEND),
    (JobError, ExitCode.BACKEND),
)
# A path the user gave that is wrong: fix the command, not the machine.
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG})
_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and run it again",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f)",
    errno.EROFS: "that file system is read-only; set FTKIT_HOME or the output path to a writable folder",
    errno.EACCES: "no permission; set FTKIT_HOME or the output path to a folder you can write",
    errno.EPERM: "set FTKIT_HOME or the output path to a folder you can write",
}


def debug_requested(ctx: Any = None) -> bool:
    """True when ``FTKIT_DEBUG`` is set (not ``0``) or ``--debug`` was given."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    return bool(ctx is not None and ctx.meta.get(_DEBUG_META))


def set_debug(ctx: Any, on: bool) -> None:
    """Record ``--debug`` for the handler of this invocation."""
    ctx.meta[_DEBUG_META] = on


def classify(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one line (secrets masked, no newline) for an error that reached the command line."""
    code, message = _classify(exc)
    return code, _one_line(redact_text(message))


def _classify(exc: BaseException) -> tuple[ExitCode, str]:
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted"
    if isinstance(exc, FtkitError):
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(exc, BackendError):
            code, _ = _os_error(cause)  # "no such file" is the command's fault, ENOSPC the machine's
        else:
            code = next((c for cls, c in _FTKIT_CODES if isinstance(exc, cls)), ExitCode.DATA)
        return code, _ftkit_message(exc)
    if isinstance(exc, ConnectionError):  # a backend that let its network error through
        return ExitCode.BACKEND, f"network error: {exc}"
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, sqlite3.Error):
        from ftkit.paths import ftkit_home

        return ExitCode.ENVIRONMENT, f"the job registry in {ftkit_home()} failed: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return ExitCode.DATA, f"not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} ({exc.reason})"
    if isinstance(exc, UnicodeError):
        return ExitCode.DATA, f"text encoding: {exc}"
    if isinstance(exc, RecursionError):
        return ExitCode.DATA, "the input is nested too deeply to process"
    if isinstance(exc, MemoryError):
        return ExitCode.ENVIRONMENT, "out of memory"
    return ExitCode.BUG, (
        f"internal error: {type(exc).__name__}: {exc} "
        f"(a bug in ftkit; run with {DEBUG_ENV}=1 for the traceback and report it)"
    )


def _os_error(exc: OSError) -> tuple[ExitCode, str]:
    what = exc.strerror or str(exc)
    where = ": ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    message = f"{where}: {what}" if where else what
    if exc.errno in _HINTS:
        message += f" ({_HINTS[exc.errno]})"
    code = ExitCode.USAGE if exc.errno in _PATH_ERRNOS else ExitCode.ENVIRONMENT
    return code, message


def _ftkit_message(exc: FtkitError) -> str:
    if isinstance(exc, DatasetError) and exc.report is not None:
        from ftkit.data.scan import ValidationReport  # here: the CLI starts without numpy

        report = exc.report
        if isinstance(report, ValidationReport) and report.errors:
            # A validation report is many lines; the command line gets the first error and a count.
            first = report.errors[0]
            total = sum(report.error_counts.values())
            more = f" (and {total - 1} more; ftkit validate {report.path} lists them)" if total > 1 else ""
            return f"{report.path}:{first.line or '-'}: {first.code}: {first.message}{more}"
    return str(exc) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(exc: BaseException, *, debug: bool = False, console: Console | None = None) -> ExitCode:
    """Print ``exc`` as one ``error:`` line on stderr (after the traceback when ``debug``); its exit code."""
    code, line = classify(exc)
    console = console or Console(stderr=True, soft_wrap=True, highlight=False)
    if debug:
        tb = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact_text(tb))
        sys.stderr.flush()
    # Text, not markup: a message holding "[hf]" must print as written.
    console.print(Text.assemble(("error: ", "red"), line) if code != ExitCode.INTERRUPTED else Text(line))
    return code


class FtkitGroup(typer.core.TyperGroup):
    """The ``ftkit`` group: every command runs inside the one error handler."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command; turn any error that is not click's own into one line and an exit code."""
        try:
            return super().invoke(ctx)
        except (_TyperUsageError, typer.Exit, typer.Abort, BrokenPipeError):
            raise  # usage errors, --help, typer.Exit, a closed pipe (`| head`): typer handles them as usual
        except (Exception, KeyboardInterrupt) as e:
            raise typer.Exit(int(report(e, debug=debug_requested(ctx)))) from None
