"""YAML read strictly: UTF-8 only, bounded size and nesting, no duplicate keys, one-line errors.

PyYAML's ``safe_load`` builds no objects but plain data, yet it still lets four things
through that a config file should never have: a mapping key given twice (the later value
wins without a word), a nesting deep enough to exhaust Python's recursion (its composer is
recursive: a ``RecursionError`` traceback), bytes that are not UTF-8 (a
``UnicodeDecodeError`` traceback) and a file of any size.  :func:`load_yaml_text` and
:func:`read_yaml_file` refuse each of them with a :class:`YamlError` naming the file and the
line; YAML syntax errors also become one line (PyYAML's own message spans five).
"""

import os
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from reid_srdl.core.errors import ReidSrdlError

#: Nesting levels (mappings and lists inside each other) a document may have.  A config is
#: three deep (``method.srdl.temperature``); the bound only stops hostile files.
MAX_DEPTH = 32

#: Bytes a config file may hold (the largest shipped config is about 2 kB).
MAX_FILE_BYTES = 1 << 20

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(ReidSrdlError, ValueError):
    """A YAML text is not valid, not UTF-8, too large, too deep or has a duplicate key."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (``<<`` merges may still be
    overridden by the mapping's own keys, as YAML intends)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line = {}
            for key_node, _value in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise ConstructorError(
                        None, None, f"duplicate key '{key}' (first given on line {seen})", key_node.start_mark
                    )
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _problem(e: yaml.YAMLError) -> str:
    """PyYAML's error as one line: ``line L, column C: problem``."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(e, yaml.reader.ReaderError):
        return f"{e.reason or 'unreadable character'} (character {e.position + 1})"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _check_depth(text: str, where: str) -> None:
    """Walk the event stream (PyYAML's parser is iterative, unlike its composer) and refuse
    a document nested deeper than :data:`MAX_DEPTH` before anything is built from it."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise YamlError(f"{where} line {line}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_yaml_text(text: str, where: str) -> Any:
    """The plain data of one YAML document; ``where`` names it in errors (``config file x``)."""
    try:
        _check_depth(text, where)
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: plain data only
    except YamlError:
        raise
    except yaml.YAMLError as e:
        raise YamlError(f"{where} is not valid YAML: {_problem(e)}") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML cannot convert (a date 2001-13-45, 5000 digits)
        raise YamlError(f"{where} holds a value that cannot be read: {str(e).splitlines()[0][:120]}") from None


def read_yaml_file(path: str, what: str = "YAML file", max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read and parse ``path`` (at most ``max_bytes``, UTF-8) with :func:`load_yaml_text`."""
    where = f"{what} {path}"
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise YamlError(f"{where} is {size} bytes; a {what} holds at most {max_bytes}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise YamlError(f"cannot read {where}: {(e.strerror or str(e)).lower()}") from None
    if len(data) > max_bytes:  # grew while we looked
        raise YamlError(f"{where} holds more than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(f"{where} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return load_yaml_text(text, where)
