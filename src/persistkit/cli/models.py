"""Store commands (ls, show, verify, alias, tag, rm, cp) and ``backends``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from persistkit.cli.options import (
    json_option,
    print_json,
    store_option,
    table,
    trust_option,
    trusted,
)


def register(group: click.Group) -> None:
    for command in (backends, ls, show, verify, alias, tag, rm, cp):
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
                    "save_options": _options_list(b.save_options),
                    "load_options": _options_list(b.load_options),
                }
                for b in infos
            ]
        )
        return
    rows = []
    for b in infos:
        safety = "safe" if b.safe else ("allow-list" if b.restricted else "trusted only")
        status = "yes" if b.available else f"no: {b.install_hint}"
        options = f"save: {_options_text(b.save_options)}; load: {_options_text(b.load_options)}"
        rows.append([b.name, status, safety, options, b.description])
    click.echo(
        table(rows, ["backend", "installed", "untrusted loads", "options", "description"])
    )


def _options_list(options: Any) -> list[str] | None:
    """The options a backend declares (``None``: it declares none, so none are checked)."""
    return None if options is None else sorted(options)


def _options_text(options: Any) -> str:
    if options is None:
        return "unchecked"
    return ", ".join(sorted(options)) or "none"


quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress bars on remote transfers."
)
durable_option = click.option(
    "--durable", is_flag=True, help="Also fsync files and folders (survives power loss; slower)."
)


def _open_store(store_url: str | None, quiet: bool = False) -> Any:
    from persistkit import progress
    from persistkit.store import Store

    progress.set_quiet(quiet)
    return Store(store_url)


@click.command()
@click.argument("name", required=False)
@store_option
@json_option
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="CLAUSE",
    help="Only versions where CLAUSE holds; several are ANDed. FIELD OP VALUE with OP one of "
    "= != > >= < <=, e.g. tags.stage=prod, metrics.accuracy>=0.9, params.C=1.0, "
    "saved_by=alice, backend=joblib, created_at>=2026-11-01, created_at>=now-7d. A field a "
    "version lacks never matches.",
)
@click.option(
    "--sort",
    "sort",
    multiple=True,
    metavar="KEYS",
    help="Order by these fields (comma-separated or repeated; '-' first for descending), "
    "e.g. --sort -metrics.accuracy,created_at. Versions lacking a field go last.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Show at most N versions.",
)
def ls(
    name: str | None,
    store_url: str | None,
    as_json: bool,
    where: tuple[str, ...],
    sort: tuple[str, ...],
    limit: int | None,
) -> None:
    """List every version of every model in a store, or of NAME; with --where, --sort and
    --limit, the versions a query finds.

    \b
    Examples:
      persistkit ls gnome --where tags.stage=prod --sort -metrics.accuracy --limit 5
      persistkit ls --where saved_by=alice --where "created_at>=now-7d" --json

    Quote clauses with > or < in them: the shell reads those as redirections.

    Metrics recorded at save (save(metrics=...)) are shown as columns. A version whose
    manifest is damaged is listed as DAMAGED (with the reason and its location on stderr;
    "damaged" in --json) when no --where clause leaves it out; exit status 0. A store
    location that does not exist is an error (a store is made by the first save into it),
    and so is a NAME the store does not hold.
    """
    from persistkit.collector import collection_paused
    from persistkit.errors import QueryError
    from persistkit.query import parse_sort, parse_where, record

    # a bad clause is a usage error (exit 2), reported before the store is read
    for option, parse, values in (("--where", parse_where, where), ("--sort", parse_sort, sort)):
        for value in values:
            try:
                parse(value)
            except QueryError as exc:
                raise click.BadParameter(
                    f"{exc.message} ({exc.hint_for('cli')})", param_hint=option
                ) from None
    store = _open_store(store_url)
    if not store.is_default and not store.exists():
        raise store.missing()
    with collection_paused():  # thousands of small acyclic records: no cyclic garbage
        found = store.find(name, where=list(where), sort=list(sort), limit=limit)
        records = [record(v) for v in found]
    for r in records:
        if r["damaged"]:
            ref = f"{r['name']}:{r['version']}"
            click.echo(
                f"warning: {ref} is damaged: {r['damaged']} (at {r['location']}) "
                f"(hint: restore it, or remove it: persistkit rm {ref})",
                err=True,
            )
    if as_json:
        print_json(records)
        return
    if not records:
        empty = f"no models in {store.url}" if not name else f"no versions of {name}"
        click.echo(empty if not where else "no versions match")
        return
    metrics = _metric_columns(records, [*sort, *where])
    rows = [
        [
            str(r["name"]),
            str(r["version"]),
            ",".join(r["aliases"]),
            "DAMAGED" if r["damaged"] else str(r["backend"]),
            "-" if r["damaged"] else str(r["created_at"]),
            "-" if r["damaged"] else _size(int(r["size_bytes"])),
            *(_metric_text(r["metrics"].get(key)) for key in metrics),
            ",".join(f"{k}={v}" for k, v in r["tags"].items()),
        ]
        for r in records
    ]
    headers = ["name", "version", "aliases", "backend", "created", "size", *metrics, "tags"]
    click.echo(table(rows, headers))


MAX_METRIC_COLUMNS = 4


def _metric_columns(records: list[dict[str, Any]], clauses: list[str]) -> list[str]:
    """The metrics shown as columns: those the sort keys and clauses name first, in that
    order, then the others by name, at most :data:`MAX_METRIC_COLUMNS`."""
    import re

    recorded = sorted({k for r in records for k in r["metrics"]})
    named: list[str] = []
    for clause in clauses:
        mentioned = re.finditer(r"metrics\.([A-Za-z0-9_.-]+)(?=[,<>=!\s]|$)", clause)
        named += [k for m in mentioned if (k := m.group(1)) in recorded and k not in named]
    return (named + [k for k in recorded if k not in named])[:MAX_METRIC_COLUMNS]


def _metric_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@click.command()
@click.argument("ref")
@store_option
@json_option
def show(ref: str, store_url: str | None, as_json: bool) -> None:
    """Show the manifest of REF (name, name:3, name@alias, name@sha256:HEX, or a path)
    without loading it."""
    from persistkit.api import inspect, resolve_source
    from persistkit.store import manifest_digest

    kind, store = resolve_source(ref, _open_store(store_url))  # once: it may print a note
    if store is not None:
        manifest = store.manifest(ref)
    else:
        manifest = inspect(
            Path(ref.removeprefix("file://")).expanduser() if kind == "path" else ref
        )
    digest = manifest_digest(manifest)
    aliases = []
    if store is not None and manifest.name and manifest.version:
        aliases = [a for a, v in store.aliases(manifest.name).items() if v == manifest.version]
    if as_json:
        print_json({**manifest.to_dict(), "digest": digest, "aliases": aliases})
        return
    env = manifest.environment
    lines = [
        f"name:       {manifest.name or '-'}"
        + (f":{manifest.version}" if manifest.version else ""),
        f"digest:     {digest}",
        f"backend:    {manifest.backend} {manifest.backend_options or ''}".rstrip(),
        f"class:      {manifest.model_class or '-'}",
        f"created:    {manifest.created_at}",
        f"python:     {env.get('python', '?')} on {env.get('platform', '?')}",
        "libraries:  " + ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items()),
        f"files:      {len(manifest.files)}, {_size(manifest.total_size)}",
    ]
    lines += [
        f"  {f.path}  {_size(f.size)}  {f.algorithm}:{f.digest[:16]}…" for f in manifest.files
    ]
    if manifest.signature:
        for role in ("inputs", "outputs"):
            for spec in manifest.signature.get(role, []):
                label = f"{role[:-1]}:"
                lines.append(f"{label:<12}{spec['name']} {spec['datatype']} {spec['shape']}")
    if aliases:
        lines.append("aliases:    " + ", ".join(aliases))
    if manifest.tags:
        lines.append("tags:       " + ", ".join(f"{k}={v}" for k, v in manifest.tags.items()))
    if manifest.outputs:
        labels = manifest.outputs.get("labels") or []
        shown = ", ".join(map(str, labels[:10])) + (", ..." if len(labels) > 10 else "")
        answers = manifest.outputs.get("kind")
        lines.append(f"answers:    {answers}" + (f" of {shown}" if labels else ""))
    if manifest.preprocess:
        steps = ", ".join(f"{k}={v}" for k, v in manifest.preprocess.items())
        lines.append(f"preprocess: {steps}")
    conversion = manifest.model.get("conversion")
    if isinstance(conversion, dict):
        how = "identical" if conversion.get("identical") else (
            f"within {conversion.get('tolerance')} (max diff {conversion.get('max_abs_diff')})"
        )
        lines.append(f"checked:    {conversion.get('checked_items')} example items, {how}")
    lines.append(f"seal:       {_seal_line(manifest)}")
    lines += _training_lines(manifest)
    if manifest.metadata:
        lines.append(f"metadata:   {manifest.metadata}")
    lines += [f"note:       {n}" for n in manifest.notes]
    click.echo("\n".join(lines))


def _training_lines(manifest: Any) -> list[str]:
    """``show``'s lines for who saved it and what its training recorded."""
    lines = []
    if manifest.saved_by:
        lines.append(f"saved by:   {manifest.saved_by}")
    for label, values in (("metrics:", manifest.metrics), ("params:", manifest.params)):
        if values:
            lines.append(f"{label:<12}" + ", ".join(f"{k}={v}" for k, v in values.items()))
    for key, value in manifest.lineage.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"{'lineage:':<12}{key}: {value}")
    return lines


@click.command()
@click.argument("ref")
@store_option
@json_option
@quiet_option
@trust_option()
def verify(
    ref: str, store_url: str | None, as_json: bool, quiet: bool, trust: tuple[str, ...]
) -> None:
    """Check every file's digest, reload REF and prove its stored example's predictions
    are bitwise identical. Exit 1 if anything differs."""
    from persistkit.api import verify as verify_artifact

    store = _open_store(store_url, quiet)
    report = verify_artifact(ref, store=store, trusted=trusted(trust))
    if as_json:
        print_json(
            {
                "uri": report.uri,
                "files_checked": report.files_checked,
                "example_checked": report.example_checked,
                "identical": report.identical,
                "seal": report.seal,
            }
        )
        return
    click.echo(f"ok: {report}")


@click.command()
@click.argument("ref")
@click.argument("alias_name", metavar="ALIAS")
@store_option
@json_option
@durable_option
@click.option(
    "--new",
    is_flag=True,
    help="Create ALIAS even though it looks like a typo of an existing alias.",
)
def alias(
    ref: str, alias_name: str, store_url: str | None, as_json: bool, durable: bool, new: bool
) -> None:
    """Point NAME@ALIAS at the version REF resolves to (moves it if it exists).

    A new ALIAS that looks like a typo of an existing one (prdo beside prod) is refused
    unless --new is given.
    """
    from persistkit.refs import parse_ref

    store = _open_store(store_url)
    name = parse_ref(ref).name
    version = store.alias(ref, alias_name, durable=durable, new=new)
    if as_json:
        print_json({"name": name, "alias": alias_name, "version": version})
        return
    click.echo(f"{name}@{alias_name} -> {name}:{version}")


@click.command()
@click.argument("ref")
@click.argument("assignment", metavar="KEY=VALUE")
@store_option
@json_option
@durable_option
def tag(ref: str, assignment: str, store_url: str | None, as_json: bool, durable: bool) -> None:
    """Set tag KEY to VALUE on the version REF resolves to.

    \b
    Examples:
      persistkit tag digits:3 stage=prod
      persistkit tag digits@prod reviewed_by=alice
    """
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise click.UsageError(f"expected KEY=VALUE, got {assignment!r}")
    from persistkit.refs import Ref

    store = _open_store(store_url)
    name, version = store.resolve(ref)
    # tag the version printed below, even if a save moves "latest" meanwhile
    tags = store.tag(Ref(name, version=version), key, value, durable=durable)
    if as_json:
        print_json({"name": name, "version": version, "tags": tags})
        return
    click.echo(f"{name}:{version} " + ", ".join(f"{k}={v}" for k, v in tags.items()))


@click.command()
@click.argument("ref")
@store_option
@json_option
@click.option("--force", is_flag=True, help="Delete even if aliases point at it (removes them).")
def rm(ref: str, store_url: str | None, as_json: bool, force: bool) -> None:
    """Delete the version REF resolves to. Its number is never reused."""
    from persistkit.refs import parse_ref

    store = _open_store(store_url)
    name = parse_ref(ref).name
    version = store.delete(ref, force=force)
    if as_json:
        print_json({"name": name, "version": version, "deleted": True})
        return
    click.echo(f"deleted {name}:{version}")


@click.command()
@click.argument("ref")
@click.argument("dest_store", metavar="DEST_STORE")
@store_option
@json_option
@quiet_option
@durable_option
@click.option(
    "--aliases",
    "copy_aliases",
    is_flag=True,
    help="Also set the source's aliases of the copied version(s) on the copies.",
)
@click.option(
    "--force", is_flag=True, help="With --aliases: move aliases that DEST_STORE already has."
)
def cp(
    ref: str,
    dest_store: str,
    store_url: str | None,
    as_json: bool,
    quiet: bool,
    durable: bool,
    copy_aliases: bool,
    force: bool,
) -> None:
    """Copy REF to the store DEST_STORE (a folder or URL): one version (NAME:3, NAME@prod)
    or every version (a bare NAME). Each becomes a new version there; digests and tags are
    kept. Aliases are copied only with --aliases: those pointing at the copied version(s)
    (for a bare NAME, all of them); one that DEST_STORE already has is refused unless
    --force."""
    from persistkit.store import Store

    store = _open_store(store_url, quiet)
    target = Store(dest_store)
    copies = store.copy_versions(ref, target, durable=durable, aliases=copy_aliases, force=force)
    records = [
        {
            "name": c.artifact.name,
            "version": c.artifact.version,
            "store": target.url,  # as the store shows it: never a password
            "source_version": c.source_version,
            "aliases": c.aliases,
            "aliases_not_copied": c.aliases_not_copied,
        }
        for c in copies
    ]
    left = [f"{r['name']}@{a}" for r in records for a in r["aliases_not_copied"]]
    if left:
        click.echo(
            f"note: aliases not copied: {', '.join(left)} (hint: cp --aliases copies them)",
            err=True,
        )
    if as_json:
        print_json(records)
        return
    for r in records:
        aliases = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
        click.echo(f"copied to {r['store']}: {r['name']}:{r['version']}{aliases}")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _seal_line(manifest: Any) -> str:
    from persistkit.safety import SEAL_STATES, seal_state

    state = seal_state(manifest)
    kid = (manifest.seal or {}).get("key_id")
    text = SEAL_STATES[state] + (f" (key {kid})" if kid and state != "yours" else "")
    return text.upper() if state == "modified" else text
