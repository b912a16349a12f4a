"""Options shared by many commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

store_option = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="PERSISTKIT_STORE",
    show_envvar=True,
    default=None,
    help="Store folder or URL (s3://bucket/prefix). Default: your per-user store.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout: indented for a person at a terminal, one compact line when
    stdout is a pipe or a file (scripts, ``jq``, logs)."""
    indent = 2 if sys.stdout is not None and sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table (no dependency, fast to import)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    fmt: Callable[[list[str]], str] = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) for c, w in zip(r, widths)
    ).rstrip()
    lines = [fmt(headers), fmt(["-" * w for w in widths])]
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines)
