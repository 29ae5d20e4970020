"""The one runner of every command-line tool: logging set-up, then errors -> one line and an exit code.

Each tool's ``main(argv=None)`` is ``run(command, argv)``: ``command(argv)`` parses its
arguments and does the work, returning an exit code (or None for 0) or raising.  The runner
sets up logging (:func:`reid_srdl.core.logs.configure_cli_logging`: INFO to stdout around
the tqdm bars, warnings to stderr) and turns what was raised into exactly one line on stderr,
``error: <the first line of the message>``, and an exit code:

====  ==========================================================================================
code  when
====  ==========================================================================================
0     done
1     a bug: any other exception, with Python's traceback (nothing here hides one)
2     bad input: a :class:`~reid_srdl.core.errors.ReidSrdlError` (what was expected, where);
      an ``OSError`` (a file that cannot be read or written, a full disk: ``error: PATH:
      reason``); a broken pipe (the reader of stdout went away); the tool's own ``bad_input``
      types (the synthetic-data writers' ``ValueError``); argparse's usage errors (its own
      two lines: usage and message)
3     the error's ``exit_code`` says so: training diverged (``TrainingDivergedError``, a NaN
      or infinite loss; the last good checkpoint is kept)
130   interrupted (Ctrl-C): ``interrupted`` (train: ``interrupted; continue with --resume``).
      A Python caller that passes ``argv`` gets the ``KeyboardInterrupt`` itself, unless the
      tool gives ``interrupted=`` (train does, as it always did)
====  ==========================================================================================

Where the tools used to differ, the stricter rule now holds for all: only the first line of a
message is printed (train and eval_reid did; a multi-line message is never spread over the
terminal), and an ``OSError`` is one line and exit 2 in train and convert_checkpoint too.
Under ``torchrun`` a tool names its process in the line (``error (rank 1 of 2): ...``) with
:func:`name_process`.
"""

import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple, Type

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.logs import configure_cli_logging

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

Command = Callable[[Optional[List[str]]], Optional[int]]

_process_tag = ""  # " (rank 1 of 2)" once a distributed tool knows its rank


def name_process(tag: str) -> None:
    """Put ``tag`` (e.g. ``" (rank 1 of 2)"``) after ``error`` in this process's error lines."""
    global _process_tag
    _process_tag = tag


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message, or its class name when it has none."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def describe_error(e: BaseException) -> str:
    """The one line printed after ``error: ``; an OSError names its file and the reason alone."""
    if isinstance(e, OSError) and not isinstance(e, ReidSrdlError) and e.strerror:
        where = e.filename if e.filename is not None else None
        reason = e.strerror.lower()
        return f"{where}: {reason}" if where is not None else reason
    return first_line(e)


def report(e: BaseException, code: int) -> int:
    """Print ``e`` as the tool's one error line on stderr; returns ``code``."""
    print(f"error{_process_tag}: {describe_error(e)}", file=sys.stderr)
    return code


def exit_code_of(e: BaseException, bad_input: Tuple[Type[BaseException], ...] = ()) -> Optional[int]:
    """The exit code the table above gives ``e``; None for a bug (the traceback is kept)."""
    declared = getattr(e, "exit_code", None)
    if isinstance(declared, int):
        return declared
    if isinstance(e, (ReidSrdlError, OSError)) or (bad_input and isinstance(e, bad_input)):
        return EXIT_BAD_INPUT
    return None


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's last flush
    does not fail again (Python's documented advice for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured, closed)
        pass


def run(
    command: Command,
    argv: Optional[Sequence[str]] = None,
    *,
    interrupted: Optional[str] = None,
    bad_input: Tuple[Type[BaseException], ...] = (),
) -> int:
    """Run one tool: logging set up, ``command(argv)``, its errors mapped by the table above.

    ``interrupted``: the line printed on Ctrl-C (always mapped to 130 then); without it Ctrl-C
    is mapped when the tool runs as a program (``argv`` None) and re-raised for a Python caller.
    ``bad_input``: further exception types this tool reports as bad input (exit 2).
    """
    name_process("")
    configure_cli_logging()
    try:
        code = command(None if argv is None else list(argv))
    except KeyboardInterrupt:
        if interrupted is None and argv is not None:
            raise
        print(f"\n{interrupted or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        print(f"error{_process_tag}: the output was closed before the end (broken pipe)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # mapped by the table, or re-raised with its traceback
        code = exit_code_of(e, bad_input)
        if code is None:
            raise
        return report(e, code)
    return EXIT_OK if code is None else int(code)
