"""MkDocs hook: the configuration page's table of settings, generated from `Settings` at build time.

The table is made where the settings are (src/facegate/config.py: each field's type, default,
bounds and description), so a setting added, renamed or re-defaulted there is on the page at the
next build and no committed copy can go stale. A setting without a description stops the build.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

MARKER = "<!-- settings-table -->"
PAGE = "configuration.md"
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def on_config(config: Any) -> Any:
    # This checkout's settings, not those of whatever facegate the environment has installed.
    src = str(Path(config.config_file_path).parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    return config


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} line: the settings table has nowhere to go")
    return markdown.replace(MARKER, settings_table())


def settings_table() -> str:
    from facegate.config import Settings

    rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description: the configuration page needs one")
        cells = [f"`{name.upper()}`", type_of(field), default_of(field), field.description]
        rows.append("| " + " | ".join(map(cell_text, cells)) + " |")
    return "\n".join(rows)


def cell_text(text: str) -> str:
    """A pipe splits a table cell, except inside a code span (where a backslash would show)."""
    parts = text.split("`")
    return "`".join(part if index % 2 else part.replace("|", "\\|") for index, part in enumerate(parts))


def type_of(field: FieldInfo) -> str:
    kinds = [
        kind for kind in typing.get_args(field.annotation) or (field.annotation,) if kind is not type(None)
    ]
    if typing.get_origin(field.annotation) is typing.Literal:
        text = " or ".join(f"`{value}`" for value in typing.get_args(field.annotation))
    else:
        names = {int: "integer", float: "number", str: "text", Path: "path", SecretStr: "secret"}
        text = " or ".join(names.get(kind, getattr(kind, "__name__", str(kind))) for kind in kinds)
    for bound in field.metadata:
        for attribute, symbol in BOUNDS.items():
            if isinstance(bound, getattr(annotated_types, attribute.capitalize())):
                text += f", {symbol} {getattr(bound, attribute)}"
    return text


def default_of(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "see meaning"
    value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    return f"`{value}`"
