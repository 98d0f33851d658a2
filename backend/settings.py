"""A job's settings, checked once against the schema (sp4d_job.settings), and their command-line flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from sp4d_job.settings import SETTINGS, SettingError, validate

from .errors import BackendError


def checked(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings in their types with defaults filled in; BackendError('bad_input') naming the
    setting and its allowed values for the first one that is not allowed."""
    try:
        return validate(settings)
    except SettingError as exc:
        raise BackendError("bad_input", str(exc)) from None


def settings_of(job: dict) -> dict[str, Any]:
    """job.json's settings, checked (``job``: the parsed job.json)."""
    return checked(job.get("settings"))


def add_flags(parser: argparse.ArgumentParser, stage: str = "generate") -> None:
    """A flag for each setting ``stage`` reads: --name VALUE (checked by ``checked``), or for a
    switch --name when its default is off, --no-name when it is on."""
    for s in SETTINGS:
        if s.stage != stage:
            continue
        flag = s.flag or "--" + s.name.replace("_", "-")
        text = f"{s.help} ({s.must()}; default {s.default})"
        if s.kind == "bool":
            flag = flag if not s.default else "--no-" + flag[2:]
            parser.add_argument(flag, dest=s.name, action="store_false" if s.default else "store_true", default=None,
                                help=text.replace("%", "%%"))
        else:
            parser.add_argument(flag, dest=s.name, metavar=s.name.upper(), help=text.replace("%", "%%"))


def from_flags(args: argparse.Namespace, stage: str = "generate") -> dict[str, Any]:
    """The settings given on the command line (unset flags left out)."""
    return {s.name: getattr(args, s.name) for s in SETTINGS
            if s.stage == stage and getattr(args, s.name, None) is not None}
