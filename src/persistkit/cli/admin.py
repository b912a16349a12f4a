"""Store administration: ``gc`` (what killed writers left) and ``migrate-store`` (a whole
store to another kind: folder, S3, SQLite, PostgreSQL)."""

from __future__ import annotations

import click

from persistkit.cli.options import json_option, print_json, store_option


def register(group: click.Group) -> None:
    for command in (gc, migrate_store):
        group.add_command(command)


def _seconds(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:], 0)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 2h") from None
    if not 0 <= seconds < float("inf"):  # negative: even saves in flight would count as old
        raise click.BadParameter(f"{text!r} is not a duration of 0 or more, such as 90s, 15m, 2h")
    return seconds


@click.command()
@store_option
@json_option
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Only what is older than this (90s, 15m, 2h, 1d): younger leftovers may be saves "
    "still in flight, so keep it longer than your longest save.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def gc(store_url: str | None, as_json: bool, grace: str, dry_run: bool) -> None:
    """Remove what writers killed mid-save left in the store: payloads no version points at
    and staging folders. Published versions are never touched.

    Run it now and then (a cron job) on a store whose writers can be killed; run it with
    --dry-run first to see what would go. A database store's payloads must not be shared
    with another store (the same blobs location): its gc would take the other's for
    leftovers.

    \b
    Examples:
      persistkit gc --dry-run --store sqlite:////srv/models/catalog.db
      persistkit gc --grace 6h --store "postgresql://user@db/models?blobs=s3://bucket/blobs"
    """
    from persistkit.store import Store

    store = Store(store_url)
    found = store.gc(grace=_seconds(grace), dry_run=dry_run)
    if as_json:
        print_json(
            {
                "removed": not dry_run,
                "items": [{"location": o.location, "age_s": round(o.age_s, 1)} for o in found],
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for orphan in found:
        click.echo(f"{verb} {orphan.location} ({orphan.age_s / 3600:.1f} h old)")
    click.echo(f"{verb} {len(found)} leftover(s) from {store.url}")


@click.command("migrate-store")
@click.argument("source", metavar="SRC")
@click.argument("dest", metavar="DST")
@json_option
@click.option("--dry-run", is_flag=True, help="Say what would be copied; copy nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def migrate_store(source: str, dest: str, as_json: bool, dry_run: bool, quiet: bool) -> None:
    """Copy the whole store SRC into DST (a store of any kind, holding none of SRC's names):
    every model and version under its own number, deleted numbers, tags and aliases; then
    check every digest, tag and alias. SRC is left as it was.

    A PostgreSQL DST needs a place for its payloads (?blobs=URL or $PERSISTKIT_BLOBS). To
    merge one model into a store that already has it, use `persistkit cp NAME DST --aliases`
    (the copies get new numbers there).

    \b
    Examples:
      persistkit migrate-store ~/models sqlite:////srv/models/catalog.db
      persistkit migrate-store s3://bucket/models \\
          "postgresql://user@db/models?blobs=s3://bucket/blobs"
    """
    from persistkit import progress
    from persistkit.catalog.moving import MovedVersion
    from persistkit.catalog.moving import migrate_store as migrate
    from persistkit.store import Store

    progress.set_quiet(quiet)

    def report(item: MovedVersion, done: int, total: int) -> None:
        if not quiet and not as_json:
            click.echo(f"[{done}/{total}] {item.name}:{item.version} {item.status}", err=True)

    src, dst = Store(source), Store(dest)
    moved = migrate(src, dst, dry_run=dry_run, progress=report)
    summary = moved.to_dict()
    source, dest = src.url, dst.url  # as the stores show them: never a password
    if as_json:
        print_json({"source": source, "dest": dest, "dry_run": dry_run, **summary})
        return
    models = {v.name for v in moved.versions}
    what = (
        f"{summary['versions']} version(s) and {summary['tombstones']} deleted number(s) of "
        f"{len(models)} model(s), {summary['aliases']} alias(es)"
    )
    if dry_run:
        click.echo(f"would copy {what} from {source} to {dest}")
    else:
        click.echo(f"copied {what} from {source} to {dest}; digests, tags and aliases verified")
