"""Reading a configuration: YAML (one level of ``_base_``), ``section.key=value`` overrides
typed against the schema, strict keys and types; and writing it back.

Precedence: dataclass defaults (the CPU demo) < YAML file < overrides.  An unknown key or a
value of the wrong type is a :class:`ConfigError` naming the key and the valid ones.
"""

import contextlib
import dataclasses
import os
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from reid_srdl.config.checks import validate
from reid_srdl.config.schema import Config, ConfigError, MethodConfig, method_options, shown, to_dict
from reid_srdl.core.files import atomic_path
from reid_srdl.core.registry import Registry
from reid_srdl.core.yaml_text import YamlError, load_yaml_text, read_yaml_file


# --------------------------------------------------------------------------- conversion
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp, key: str, methods: Registry):
    """Check `value` against the annotation `tp`; return it in the field's own type."""
    origin = typing.get_origin(tp)
    if origin in (tuple, list, Tuple, List, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key '{key}' expects a list, got {type(value).__name__} {shown(value)}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]", methods) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML follows YAML 1.1, whose float needs a dot: "5e-4" and "1e30" arrive as
        # strings.  Every spelling Python's float() reads is a float here.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, methods, key)
        raise ConfigError(f"key '{key}' is a section; give it as a mapping, got {shown(value)}")
    raise ConfigError(f"key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {shown(value)}")


def _schema(cls, methods: Registry) -> Dict[str, Any]:
    """Key -> type of a section; the method section's keys come from the method registry."""
    if cls is MethodConfig:
        return {"name": str, **method_options(methods)}
    return typing.get_type_hints(cls)


def _build(cls, values: Dict[str, Any], methods: Registry, prefix: str = ""):
    """Instantiate dataclass `cls` from a (possibly partial) nested dict, strictly."""
    hints = _schema(cls, methods)
    kwargs = {}
    for k, v in values.items():
        dotted = f"{prefix}.{k}" if prefix else k
        if k not in hints:
            where = f"in '{prefix}'" if prefix else "at the top level"
            raise ConfigError(f"unknown key '{dotted}'; valid keys {where}: {', '.join(hints)}")
        kwargs[k] = _coerce(v, hints[k], dotted, methods)
    if cls is MethodConfig:
        name = kwargs.pop("name", MethodConfig.name)
        # Every registered method's options, at their defaults where not given.
        options = tuple((n, kwargs[n] if n in kwargs else opt()) for n, opt in method_options(methods).items())
        return MethodConfig(name=name, options=options)
    if cls is Config and "method" not in kwargs:
        kwargs["method"] = _build(MethodConfig, {}, methods, "method")  # its options, at their defaults
    return cls(**kwargs)


def _deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        data = read_yaml_file(path, "config file")
    except YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_yaml_dict(path: str) -> Dict[str, Any]:
    """Read a config YAML, resolving one level of ``_base_`` (a path relative to the file)."""
    data = _read_yaml(path)
    base_ref = data.pop("_base_", None)
    if base_ref is None:
        return data
    if not isinstance(base_ref, str) or not base_ref:
        raise ConfigError(f"config file {path}: _base_ must be the path of another config file, got {base_ref!r}")
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base_ref)
    base = _read_yaml(base_path)
    if "_base_" in base:
        raise ConfigError(f"{base_path} has its own _base_; only one level of _base_ is supported")
    return _deep_merge(base, data)


def parse_override(text: str) -> Tuple[List[str], str]:
    """``optim.lr=0.05`` -> (['optim', 'lr'], '0.05'); the value is typed against the schema."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}' has an empty key part")
    return parts, raw


def _parse_value(raw: str, tp) -> Any:
    """A string field keeps the raw text ("0001" stays "0001"); others are YAML scalars."""
    if tp is str:
        return raw
    try:
        return load_yaml_text(raw, "override value")
    except YamlError:
        return raw  # not (acceptable) YAML: the schema check names the key and the type it expects


def _set_dotted(tree: Dict[str, Any], parts: List[str], raw: str, cls, methods: Registry) -> None:
    """Put the value `raw` at `parts` in the nested dict, checking each step against the schema."""
    node, node_cls, path = tree, cls, []
    for i, p in enumerate(parts):
        path.append(p)
        hints = _schema(node_cls, methods)
        if p not in hints:
            where = f"in '{'.'.join(path[:-1])}'" if i else "at the top level"
            raise ConfigError(f"unknown key '{'.'.join(path)}'; valid keys {where}: {', '.join(hints)}")
        tp = hints[p]
        last = i == len(parts) - 1
        if last:
            node[p] = _parse_value(raw, tp)
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"key '{'.'.join(path)}' is a value, not a section")
            node = node.setdefault(p, {})
            node_cls = tp


def config_from_dict(tree: Dict[str, Any], methods: Registry) -> Config:
    """A :class:`Config` from a (possibly partial) nested dict such as ``to_dict`` writes,
    strictly: missing keys take their defaults, unknown ones raise :class:`ConfigError`."""
    return _build(Config, tree, methods)


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), *, methods: Registry) -> Config:
    """Defaults, then the YAML file (if any), then the dotted overrides.

    ``methods``: the method registry (``reid_srdl.methods.METHODS``), which gives the
    ``method`` section its keys; ``reid_srdl.load_config`` passes the built-in one.
    """
    tree: Dict[str, Any] = load_yaml_dict(path) if path else {}
    for text in overrides:
        parts, raw = parse_override(text)
        _set_dotted(tree, parts, raw, Config, methods)
    cfg = _build(Config, tree, methods)
    validate(cfg, methods)
    return cfg


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
