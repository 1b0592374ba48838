"""Node configuration: one TOML file, environment overrides, validated at start."""

from mvi_node.config.settings import ConfigError, Settings, load_settings, masked_dump

__all__ = ["ConfigError", "Settings", "load_settings", "masked_dump"]
