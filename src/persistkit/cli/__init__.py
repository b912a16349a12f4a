"""The ``persistkit`` command line: one click group, one module per family of commands.

Heavy modules (numpy, frameworks, servers) are imported inside the commands that need them,
so ``persistkit ls`` starts fast.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

import click

from persistkit.errors import PersistkitError, PersistkitWarning


def error_line(exc: PersistkitError) -> str:
    """``error: MESSAGE (hint: HINT)`` on one line, the hint in the command line's terms
    (``--trust``, ``--store URL``; see :mod:`persistkit.errors`)."""
    line = f"error: {exc.message}"
    hint = exc.hint_for("cli")
    if hint:
        line += f" (hint: {hint})"
    return line.replace("\n", " ")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A persistkit warning as one ``note:`` line on stderr (no file and line number)."""
    if issubclass(category, PersistkitWarning):
        click.echo(f"note: {message}".replace("\n", " "), err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


class PersistkitGroup(click.Group):
    """Turns a :class:`PersistkitError` into one line on stderr (with its hint) and exit 1,
    and a :class:`PersistkitWarning` into a ``note:`` line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("always", PersistkitWarning)
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except PersistkitError as exc:
                click.echo(error_line(exc), err=True)
                sys.exit(1)


@click.group(cls=PersistkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persistkit")
def main() -> None:
    """Keep trained models: save them versioned and hashed, load them safely, predict, serve.

    \b
    Models live in a store: a folder (default: your per-user data folder, or
    $PERSISTKIT_STORE), an object-storage URL such as s3://bucket/models, or a database
    catalog: sqlite:///models.db, or postgresql://host/db?blobs=s3://bucket/models.
    Refer to a model as NAME (latest), NAME:3 (a version), NAME@prod (an alias),
    NAME@best:accuracy (the highest metric), or give the path of an artifact folder or a
    model file.

    \b
    Examples:
      persistkit backends              which serializers are installed
      persistkit ls                    the models in the store
      persistkit ls digits --where tags.stage=prod --sort -metrics.accuracy
      persistkit show digits           the manifest of the latest 'digits'
      persistkit verify digits:2       prove version 2 reloads to identical predictions
      persistkit serve digits@prod     serve it (REST; --grpc-port for gRPC)
    """


def _register() -> None:
    from persistkit.cli import admin, bench, convert, models, predict, scan, serve

    for module in (models, predict, serve, scan, bench, convert, admin):
        module.register(main)


_register()
