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
    help="Where the models are: a folder, memory://NAME, s3://bucket/prefix, "
    "sqlite:///path/catalog.db or postgresql://user@host/db (database stores take "
    "?blobs=FOLDER_OR_S3_URL for the payloads; SQLite defaults to a folder beside the file). "
    "Default: your per-user store.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
app_dir_option = click.option(
    "--app-dir",
    metavar="DIR",
    default=".",
    show_default=True,
    help="Folder the model's own code is imported from (a class defined in DIR/cnn.py is "
    "cnn.Net), as with `python -m` and uvicorn's --app-dir. It goes last on the import "
    "path, so it never hides an installed package.",
)


_TRUST_ALL = "*"


def trust_option(what: str = "the artifact") -> Callable[[Any], Any]:
    """``--trust`` alone trusts ``what`` entirely; ``--trust NAME`` (repeatable) trusts only
    that global, as ``trusted=["NAME", ...]`` does in Python. Read it with :func:`trusted`."""
    return click.option(
        "--trust",
        "trust",
        multiple=True,
        is_flag=False,
        flag_value=_TRUST_ALL,
        default=(),
        metavar="[NAME]",
        help=f"--trust alone trusts {what} entirely (runs its code); --trust module.Name "
        "(repeatable) allows just that global, as `persistkit scan` lists them. A bare "
        "--trust takes the next word as a name: put it after the other arguments.",
    )


def trusted(values: tuple[str, ...]) -> bool | list[str]:
    """What ``--trust`` values mean for ``load(trusted=...)``: ``True``, a list of exact
    global names, or ``False``. A value that names an existing file is refused: it was
    probably an input swallowed by a bare ``--trust`` placed before it."""
    import os

    if _TRUST_ALL in values:
        return True
    names = []
    for value in values:
        parts = value.split(".")
        if os.path.exists(value) or len(parts) < 2 or not all(p.isidentifier() for p in parts):
            raise click.BadParameter(
                f"{value!r} is not a global's name like module.Name"
                + (" (it is a file here)" if os.path.exists(value) else ""),
                param_hint="--trust",
            ) from None
        names.append(value)
    return names or False


def use_app_dir(folder: str) -> str:
    """Put ``folder`` on this process's import path, last; return it resolved.

    ``python script.py`` and ``python -m`` let a model's class be imported from the folder
    the user works in; the CLI does the same, so `persistkit predict NAME x.npy` finds
    ``cnn.Net`` next to the user. It is appended, not prepended: a stray ``numpy.py`` in a
    downloaded folder must not replace the real numpy while an untrusted file loads. (It is
    never put in ``PYTHONPATH``: a child process would place it *before* site-packages.
    Server workers get it through their configuration; benchmark subprocesses inherit this
    process's whole ``sys.path``, in order.)
    """
    from pathlib import Path

    from persistkit.errors import InputError

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(
            f"--app-dir {folder}: no such folder",
            hint="give the folder that holds the model's code (default: the current folder)",
        )
    resolved = str(path.resolve())
    if resolved not in sys.path:
        sys.path.append(resolved)
    return resolved


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
