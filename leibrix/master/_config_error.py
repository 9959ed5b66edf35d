"""The error of an unusable master configuration, raised by ``_config`` and the option checks it runs."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """The configuration is unusable; the message says which option, from where, and why."""
