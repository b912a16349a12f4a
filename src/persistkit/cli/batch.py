"""``persistkit predict ... --output FILE [--engine dask]``: batch predictions into a table.

The options are added to ``persistkit predict`` (:func:`batch_options`); any of them turns a
plain prediction into a batch run (:func:`persistkit.batch.predict_many`). Nothing heavy is
imported until a batch run starts, so plain ``predict`` pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

ENGINE_NAMES = ("local", "dask")  # persistkit.engines.ENGINES, without importing it


def batch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--output``, ``--engine``, ``--address``, ``--workers``, ``--partition-size`` and
    ``--resume`` to a command (their defaults are all empty: none given, no batch run)."""
    options = [
        click.option(
            "--output",
            "output",
            metavar="FILE",
            default=None,
            help="Write the answers to this table (.parquet or .csv), one row per item "
            "beside its input path; INPUTs may then be folders, globs or @list files.",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINE_NAMES),
            default=None,
            help="Where a batch run computes: dask (worker processes of a Dask cluster, "
            "local unless --address) or local (this process). Default with --output: local.",
        ),
        click.option(
            "--address",
            metavar="URL",
            default=None,
            help="A running Dask scheduler (tcp://host:8786) for --engine dask.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Worker processes of the local Dask cluster (default: one per core).",
        ),
        click.option(
            "--partition-size",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Input files per partition, the unit of work and of resuming (default 64).",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the run whose parts are beside --output (a rerun of the same run "
            "resumes anyway; this fails if there is none).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def predict_batch(params: dict[str, Any]) -> None:
    """Run ``persistkit predict`` as a batch run and print its report; ``params`` are the
    command's parameters as click parsed them (its own and :func:`batch_options`')."""
    from persistkit.batch import DEFAULT_PARTITION_SIZE, predict_many
    from persistkit.cli.options import print_json, trusted, use_app_dir
    from persistkit.cli.predict import parse_image_size

    output, engine = params["output"], params["engine"]
    address, workers = params["address"], params["workers"]
    if output is None:
        raise click.UsageError("a batch run (--engine, --address, --resume, ...) needs --output")
    if (address or workers) and engine != "dask":
        raise click.UsageError("--address and --workers are for --engine dask")
    if address and workers:
        raise click.UsageError(
            "--workers sizes the local cluster; with --address, the cluster's own workers run"
        )
    report = predict_many(
        params["ref"],
        params["inputs"],
        output=output,
        engine=engine or "local",
        address=address,
        workers=workers,
        store=params["store_url"],
        trusted=trusted(params["trust"]),
        method=params["method"],
        raw=params["raw"],
        image_size=parse_image_size(params["image_size"]),
        fit=params["fit"],
        partition_size=params["partition_size"] or DEFAULT_PARTITION_SIZE,
        resume=params["resume"],
        app_dir=use_app_dir(params["app_dir"]),
    )
    if params["as_json"]:
        print_json(report.to_dict())
    else:
        click.echo(str(report))
