"""The one base class of errors caused by what a user gave (data, config, files, arrays).

Each such error says what was expected and where; the command-line tools print it as one
line and exit with code 2 instead of showing a stack trace.  Subclasses also derive from
the builtin that fits (ValueError, FileNotFoundError) so callers can catch either.
"""


class ReidSrdlError(Exception):
    """Bad input from the user: the message names the file, folder, key or array at fault."""
