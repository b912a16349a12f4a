"""The ``persistkit`` command line: one click group, one module per family of commands.

Heavy modules (numpy, frameworks, servers) are imported inside the commands that need them,
so ``persistkit ls`` starts fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from persistkit.errors import PersistkitError


class PersistkitGroup(click.Group):
    """Turns a :class:`PersistkitError` into one line on stderr (with its hint) and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PersistkitError as exc:
            line = f"error: {exc.message}"
            if exc.hint:
                line += f" (hint: {exc.hint})"
            click.echo(line.replace("\n", " "), err=True)
            sys.exit(1)


@click.group(cls=PersistkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persistkit")
def main() -> None:
    """Keep trained models: save them versioned and hashed, load them safely, predict, serve.

    \b
    Models live in a store: a folder (default: your per-user data folder, or
    $PERSISTKIT_STORE) or an object-storage URL such as s3://bucket/models.
    Refer to a model as NAME (latest), NAME:3 (a version), NAME@prod (an alias), or give the
    path of an artifact folder or a model file.

    \b
    Examples:
      persistkit backends              which serializers are installed
      persistkit ls                    the models in the store
      persistkit show digits           the manifest of the latest 'digits'
      persistkit verify digits:2       prove version 2 reloads to identical predictions
    """


def _register() -> None:
    from persistkit.cli import bench, models, predict, scan, serve

    for module in (models, predict, serve, scan, bench):
        module.register(main)


_register()
