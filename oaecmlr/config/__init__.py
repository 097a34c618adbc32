"""Run configuration, without torch: settings and their defaults (`settings`), TOML files and
`--set` values (`files`), presets and precedence (`presets`), and the checks made before a run
exists (`checks`)."""

from oaecmlr.config.checks import BatchNormPlan, dataset_name, gpu_entries, plan_batchnorm, validate
from oaecmlr.config.files import config_from_dict, parse_override, read_toml, set_value, to_toml
from oaecmlr.config.presets import (
    Resolved,
    available_presets,
    load_config,
    preset_description,
    presets_dir,
    resolve_config,
)
from oaecmlr.config.settings import Config
from oaecmlr.errors import ConfigError

__all__ = [
    "BatchNormPlan", "Config", "ConfigError", "Resolved", "available_presets", "config_from_dict", "dataset_name",
    "gpu_entries", "load_config", "parse_override", "plan_batchnorm", "preset_description", "presets_dir",
    "read_toml", "resolve_config", "set_value", "to_toml", "validate",
]
