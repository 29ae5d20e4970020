"""Typed configuration: dataclasses loaded from YAML, dotted overrides, strict checking.

schema   the sections (frozen dataclasses with the CPU demo's defaults), to_dict, flat_dict
loading  YAML (one level of ``_base_``) and ``section.key=value`` overrides typed against the
         schema, strict keys; load_config, save_config
checks   what types cannot say: choices, ranges, NaN/inf by name, the method's epochs

Each package's ``build_*`` function turns its own section into explicit arguments; library
code never reads this object deep inside.  The method registry is passed in
(``load_config(..., methods=METHODS)``); ``reid_srdl.load_config`` passes the built-in one.
"""

from reid_srdl.config.checks import MAX_BATCH, check_choice, check_range, int_arg, range_problem, validate
from reid_srdl.config.loading import config_from_dict, load_config, load_yaml_dict, parse_override, save_config
from reid_srdl.config.schema import (
    SOURCE_SEPARATOR,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    LossConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    flat_dict,
    method_options,
    to_dict,
)

__all__ = [
    "MAX_BATCH",
    "SOURCE_SEPARATOR",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "check_choice",
    "check_range",
    "config_from_dict",
    "flat_dict",
    "int_arg",
    "load_config",
    "load_yaml_dict",
    "parse_override",
    "range_problem",
    "save_config",
    "method_options",
    "to_dict",
    "validate",
]
