"""Experiment configs: one TOML file per experiment, every value overridable from the command line."""

from __future__ import annotations

import ast
import tomllib
from copy import deepcopy
from dataclasses import fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or override is malformed."""


def section_dataclass(cls: Any, config: dict[str, Any], name: str) -> Any:
    """The config's ``[name]`` section as a dataclass; a key the dataclass lacks is an error."""
    section = config.get(name, {})
    unknown = set(section) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys {sorted(unknown)}")
    return cls(**section)


def _parse_value(raw: str) -> Any:
    # TOML-ish literals: numbers, booleans, lists and quoted strings; anything else stays a string.
    lowered = raw.strip()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(lowered)
    except (ValueError, SyntaxError):
        return raw


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; an unknown key is an error, not a silent addition."""
    result = deepcopy(config)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {override!r}: no section {part!r}")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"override {override!r}: unknown key {key!r}")
        node[leaf] = _parse_value(raw)
    return result


def load_config(path: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return apply_overrides(config, overrides or [])
