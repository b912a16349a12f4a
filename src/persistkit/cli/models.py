"""Commands that read models and backends: backends, ls, show, verify."""

from __future__ import annotations

from typing import Any

import click

from persistkit.cli.options import json_option, print_json, store_option, table


def register(group: click.Group) -> None:
    for command in (backends, ls, show, verify):
        group.add_command(command)


@click.command()
@json_option
def backends(as_json: bool) -> None:
    """List every serialization backend, whether it is installed, and whether it is safe
    to load from strangers."""
    from persistkit.api import backends as list_backends

    infos = list_backends()
    if as_json:
        print_json(
            [
                {
                    "name": b.name,
                    "available": b.available,
                    "safe": b.safe,
                    "restricted": b.restricted,
                    "plugin": b.plugin,
                    "extra": b.extra,
                    "install": None if b.available else b.install_hint,
                    "description": b.description,
                }
                for b in infos
            ]
        )
        return
    rows = []
    for b in infos:
        safety = "safe" if b.safe else ("allow-list" if b.restricted else "trusted only")
        status = "yes" if b.available else f"no: {b.install_hint}"
        rows.append([b.name, status, safety, b.description])
    click.echo(table(rows, ["backend", "installed", "untrusted loads", "description"]))


@click.command()
@click.argument("name", required=False)
@store_option
@json_option
def ls(name: str | None, store_url: str | None, as_json: bool) -> None:
    """List the models in a store, or every version of NAME."""
    from persistkit.store import Store

    store = Store(store_url)
    names = [name] if name else store.list()
    records: list[dict[str, Any]] = []
    for model_name in names:
        for m in store.versions(model_name):
            records.append(
                {
                    "name": m.name,
                    "version": m.version,
                    "backend": m.backend,
                    "created_at": m.created_at,
                    "aliases": [],
                    "tags": m.tags,
                    "size_bytes": m.total_size,
                    "class": m.model_class,
                }
            )
    if as_json:
        print_json(records)
        return
    if not records:
        click.echo(f"no models in {store.url}" if not name else f"no versions of {name}")
        return
    rows = [
        [
            str(r["name"]),
            str(r["version"]),
            str(r["backend"]),
            str(r["created_at"]),
            _size(int(r["size_bytes"])),
            str(r["class"] or ""),
        ]
        for r in records
    ]
    click.echo(table(rows, ["name", "version", "backend", "created", "size", "class"]))


@click.command()
@click.argument("ref")
@store_option
@json_option
def show(ref: str, store_url: str | None, as_json: bool) -> None:
    """Show the manifest of REF (name, name:3, name@alias, or a path) without loading it."""
    from persistkit.api import inspect

    manifest = inspect(ref, store=store_url)
    if as_json:
        print_json(manifest.to_dict())
        return
    env = manifest.environment
    lines = [
        f"name:       {manifest.name or '-'}"
        + (f":{manifest.version}" if manifest.version else ""),
        f"backend:    {manifest.backend} {manifest.backend_options or ''}".rstrip(),
        f"class:      {manifest.model_class or '-'}",
        f"created:    {manifest.created_at}",
        f"python:     {env.get('python', '?')} on {env.get('platform', '?')}",
        "libraries:  " + ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items()),
        f"files:      {len(manifest.files)}, {_size(manifest.total_size)}",
    ]
    lines += [f"  {f.path}  {_size(f.size)}  sha256:{f.sha256[:16]}…" for f in manifest.files]
    if manifest.signature:
        for role in ("inputs", "outputs"):
            for spec in manifest.signature.get(role, []):
                lines.append(f"{role[:-1]}:      {spec['name']} {spec['datatype']} {spec['shape']}")
    if manifest.tags:
        lines.append("tags:       " + ", ".join(f"{k}={v}" for k, v in manifest.tags.items()))
    if manifest.metadata:
        lines.append(f"metadata:   {manifest.metadata}")
    lines += [f"note:       {n}" for n in manifest.notes]
    click.echo("\n".join(lines))


@click.command()
@click.argument("ref")
@store_option
@click.option("--trust", is_flag=True, help="Trust the artifact entirely (runs its code).")
def verify(ref: str, store_url: str | None, trust: bool) -> None:
    """Check every file's sha256, reload REF and prove its stored example's predictions
    are bitwise identical. Exit 1 if anything differs."""
    from persistkit.api import verify as verify_artifact

    report = verify_artifact(ref, store=store_url, trusted=trust)
    click.echo(f"ok: {report}")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
