"""The `persistkit convert` command: a new version of a model in another format."""

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


@click.command()
@click.argument("ref")
@click.option(
    "--to",
    "backend",
    required=True,
    metavar="BACKEND",
    help="The format to write: onnx, export (torch.export), safetensors, joblib, ... "
    "(`persistkit backends` lists them).",
)
@click.option(
    "--example",
    "example_path",
    metavar="FILE.npy",
    default=None,
    help="An input batch to convert with and check on (default: the example stored with REF).",
)
@click.option(
    "--to-path",
    "target",
    metavar="DIR",
    default=None,
    help="Write a new artifact folder here instead of a new version in the store "
    "(needed when REF is a folder, not a stored model).",
)
@store_option
@trust_option()
@json_option
@app_dir_option
def convert(
    ref: str,
    backend: str,
    example_path: str | None,
    target: str | None,
    store_url: str | None,
    trust: tuple[str, ...],
    as_json: bool,
    app_dir: str,
) -> None:
    """Write REF again with another backend, as a new version of the same model.

    \b
    The source must still reproduce the example stored with it; the converted model is
    reloaded and checked against it on that example (identical, or within the backend's
    stated tolerance for ONNX) before the new version is published. Labels, preprocessing,
    metadata and tags carry over.

    \b
    Examples:
      persistkit convert gnome --to export        a class-free .pt2 (no training code needed)
      persistkit convert iris:2 --to onnx         runs with onnxruntime: no scikit-learn
      persistkit convert ./net --to onnx --to-path ./net-onnx --example batch.npy
    """
    from persistkit.convert import convert as run_convert

    use_app_dir(app_dir)
    artifact = run_convert(
        ref,
        backend,
        store=store_url,
        target=target,
        example=example_path,
        trusted=trusted(trust),
    )
    conversion = artifact.manifest.model.get("conversion", {})
    if as_json:
        print_json(
            {
                "uri": artifact.uri,
                "name": artifact.name,
                "version": artifact.version,
                "backend": artifact.backend,
                "converted_from": artifact.manifest.metadata.get("converted_from"),
                "check": conversion or {"identical": True},
            }
        )
        return
    where = f"{artifact.name}:{artifact.version}" if artifact.name else artifact.uri
    source = artifact.manifest.metadata.get("converted_from", ref)
    click.echo(f"{where}: {artifact.backend}, converted from {source}")
    if conversion:
        items = conversion.get("checked_items")
        if conversion.get("identical"):
            click.echo(f"  predictions on {items} example items: identical")
        else:
            tol = conversion.get("tolerance", {})
            click.echo(
                f"  predictions on {items} example items: within rtol={tol.get('rtol')}, "
                f"atol={tol.get('atol')} (largest difference {conversion.get('max_abs_diff'):.3g})"
            )
    else:
        click.echo("  reloaded and verified: predictions on the example identical")


def register(group: click.Group) -> None:
    """Add this module's commands to the `persistkit` group."""
    group.add_command(convert)
