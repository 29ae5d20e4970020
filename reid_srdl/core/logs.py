"""Logging for the command-line tools: the library logs, the tools decide where it goes.

Library modules log through ``logging.getLogger(__name__)`` and never print.  A tool calls
:func:`configure_cli_logging` once: INFO lines (epoch lines, result tables) go to standard
output through ``tqdm.write`` -- so they never tear a progress bar -- and warnings to
standard error, both as plain messages.
"""

import logging
import sys

from tqdm import tqdm

_MARK = "_reid_srdl_cli_handler"


class _TqdmStdout(logging.Handler):
    """INFO and below to the current sys.stdout (looked up at each line), around tqdm bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # logging must never break the run
            self.handleError(record)


class _Stderr(logging.StreamHandler):
    """Warnings and errors to the current sys.stderr."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Route the ``reid_srdl`` loggers to the console (idempotent: a second call replaces the
    first one's handlers)."""
    root = logging.getLogger("reid_srdl")
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
    out, err = _TqdmStdout(), _Stderr()
    out.addFilter(lambda r: r.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
