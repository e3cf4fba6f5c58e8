"""Errors about a named setting, spelled for whoever reads them.

A library error says ``batch_size must be a positive int``; the same error at the command
line must say ``--batch-size must be a positive int``. An :class:`ArgumentError` records
which parts of its message name a parameter (``mentions``), so a front end re-renders it
with its own spellings (:meth:`ArgumentError.render`, the CLI's table of flags) instead of
parsing text.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxconv._args import as_int


class ArgumentError(ValueError):
    """A ValueError whose message names parameters by their Python spelling.

    Args:
      message: the message as a Python caller reads it, e.g. ``"batch_size must be ..."``.
      mentions: the substrings of ``message`` that name a parameter or a setting of one
        (``"batch_size"``, ``"verify=False"``), to be respelled by :meth:`render`.
    """

    def __init__(self, message: str, mentions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.mentions = tuple(mentions)

    def render(self, spelling: Mapping[str, str]) -> str:
        """The message with each mention that ``spelling`` knows replaced by its spelling."""
        text = self.message
        for mention in self.mentions:
            if mention in spelling:  # whole names only: "data_dir" is not in "tfds_data_dir"
                pattern = rf"(?<![\w-]){re.escape(mention)}(?!\w)"
                text = re.sub(pattern, lambda _, m=mention: spelling[m], text)
        return text


class ConfigError(ArgumentError):
    """One setting broke a rule: the message is ``"<param> <rule>"``, ``param`` names it."""

    def __init__(self, param: str, rule: str) -> None:
        super().__init__(f"{param} {rule}", (param,))
        self.param, self.rule = param, rule

    def render(self, spelling: Mapping[str, str]) -> str:
        """The message with its leading parameter respelled (the rule may use the same word in
        its plain sense: "devices ... each process must give as many devices")."""
        return f"{spelling.get(self.param, self.param)} {self.rule}"


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; else TypeError (not an int) or :class:`ConfigError`."""
    value = as_int(value, name)
    if value < 1:
        raise ConfigError(name, f"must be a positive int (>= 1), got {value}")
    return value


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0; else TypeError (not a real) or :class:`ConfigError`."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(name, f"must be a finite number > 0, got {value!r}")
    return float(value)
