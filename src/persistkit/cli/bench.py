"""The ``persistkit bench`` command: every installed serializer measured on your model."""

from __future__ import annotations

import click

from persistkit.cli.options import (
    app_dir_option,
    json_option,
    print_json,
    store_option,
    trust_option,
    trusted,
    use_app_dir,
)


def register(group: click.Group) -> None:
    """Add this module's commands to the `persistkit` group."""
    group.add_command(bench)


@click.command()
@click.argument("ref")
@click.option(
    "--backends",
    "backend_list",
    metavar="A,B",
    default=None,
    help="Only these backends (comma-separated). Default: every installed one that can "
    "save the model.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds of save+load per backend (medians are reported).",
)
@click.option("--plot", "plot_path", metavar="OUT.png", default=None, help="Write a bar chart.")
@click.option("--no-memory", is_flag=True, help="Skip the fresh-process peak memory measurement.")
@trust_option("the artifact")
@store_option
@json_option
@app_dir_option
def bench(
    ref: str,
    backend_list: str | None,
    repeat: int,
    plot_path: str | None,
    no_memory: bool,
    trust: tuple[str, ...],
    store_url: str | None,
    as_json: bool,
    app_dir: str,
) -> None:
    """Measure every installed backend on REF (a ref, an artifact folder or a model file):
    save and load time, size, peak load memory, predict latency, identical predictions.

    \b
    Examples:
      persistkit bench digits
      persistkit bench digits --backends joblib,pickle --repeat 5 --json
      persistkit bench ./model.joblib --trust --plot bench.png
    """
    from persistkit.bench import bench as run_bench
    from persistkit.bench import status_line

    use_app_dir(app_dir)
    show = status_line()
    report = run_bench(
        ref,
        backends=backend_list.split(",") if backend_list else None,
        repeat=repeat,
        store=store_url,
        trusted=trusted(trust),
        measure_memory=not no_memory,
        progress=show,
    )
    if show is not None:
        click.echo("\r\033[K", nl=False, err=True)
    if plot_path:
        report.plot(plot_path)
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(report.table())
    if plot_path:
        click.echo(f"chart written to {plot_path}")
