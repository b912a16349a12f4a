"""The ``persistkit scan`` command: audit a model file or artifact without loading it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from persistkit.cli.options import json_option, print_json, store_option


def register(group: click.Group) -> None:
    """Add this module's commands to the `persistkit` group."""
    group.add_command(scan)


@click.command()
@click.argument("source")
@store_option
@json_option
def scan(source: str, store_url: str | None, as_json: bool) -> None:
    """Audit SOURCE (a model file, an artifact folder or a store ref) without loading it.

    \b
    Lists the format, sizes and every global the payload would import, split into those
    on persistkit's allow-list and the untrusted rest. A file whose globals are all allowed
    is then built the way the default load builds it (nothing outside the allow-list is
    imported, only reviewed callables run) and thrown away, so scan and load agree.
    Exit 0 when it loads under the default policy (or is sealed by a key you trust),
    1 when loading it needs trusted=... or the file is damaged.
    """
    report = scan_report(source, store_url)
    if as_json:
        print_json(report)
    else:
        click.echo(_human(report))
    sys.exit(0 if report["loads_by_default"] else 1)


def scan_report(source: str, store_url: str | None = None) -> dict[str, Any]:
    """The audit of ``source`` as a JSON-ready dict (what ``scan --json`` prints)."""
    from persistkit.api import locate
    from persistkit.payload import special_entries
    from persistkit.safety import TrustPolicy, seal_state
    from persistkit.safety.audit import FileAudit, audit_file

    path = Path(source).expanduser()
    rebuild: list[str] = []
    if path.is_file():
        audits = [audit_file(path)]
        backend, sealed, uri, seal = None, False, str(path), "unsealed"
    else:
        found = locate(source, store_url)
        manifest = found.manifest
        seal = "unsealed" if found.bare else seal_state(manifest)
        sealed = seal in ("yours", "trusted")
        # an unsealed artifact is loaded whole below, which builds each file anyway; a
        # foreign folder's files (config, weights, an MLmodel) are read only by its backend,
        # so its verdict is that load's alone
        audits = (
            []
            if found.folder
            else [
                audit_file(found.directory / path, build=sealed)
                for path in manifest.payload_files
            ]
        )
        # links and special files anywhere in the folder: load refuses them too
        audits += [
            FileAudit(str(found.directory), "not a regular file", 0, error=problem.message)
            for problem in special_entries(found.directory)
        ]
        backend, uri = manifest.backend, found.uri
        rebuild = _rebuild_imports(manifest.backend_options)
        if not sealed and all(a.clean for a in audits):
            # what only the whole artifact shows (a companion file the manifest does not
            # list, ...): load it as the default load would, and take its verdict
            audits += _as_load_would(found)
    policy = TrustPolicy()
    untrusted_rebuild = [name for name in rebuild if not policy.allows(name)]
    clean = all(a.clean for a in audits) and not untrusted_rebuild
    untrusted = sorted({name for a in audits for name in a.untrusted} | set(untrusted_rebuild))
    return {
        "source": uri,
        "backend": backend,
        "sealed_by_trusted_key": sealed,
        "seal": seal,
        "clean": clean,
        "loads_by_default": clean or (sealed and not any(a.error for a in audits)),
        "untrusted_globals": untrusted,
        "rebuild_imports": rebuild,
        "files": [a.to_dict() for a in audits],
    }


def _as_load_would(found: Any) -> list[Any]:
    """Load ``found`` under the default policy (it imports only allow-listed code and runs
    only reviewed callables) and turn a refusal into an audit entry; nothing if it loads."""
    from persistkit.api import load_located
    from persistkit.errors import NotFittedError, PersistkitError, UntrustedArtifactError
    from persistkit.safety.audit import FileAudit

    kind = found.manifest.backend if found.folder else "artifact"
    entry = FileAudit(str(found.directory), kind, 0)
    try:
        load_located(found)
    except UntrustedArtifactError as exc:
        entry.refused = exc.message
        entry.untrusted = sorted(exc.globals_needed)
    except NotFittedError:
        return []  # built fine; only preparing it for inference failed
    except PersistkitError as exc:
        entry.error = exc.message
    return [entry] if not entry.clean or found.folder else []


def _rebuild_imports(backend_options: dict[str, Any]) -> list[str]:
    """What loading imports besides the payload: the class (or factory) that a module saved
    as weights plus a recipe (``backend_options["module"]``) is rebuilt with."""
    recipe = backend_options.get("module")
    if not isinstance(recipe, dict):
        return []
    factory = recipe.get("factory")
    if isinstance(factory, str):
        return [factory]
    klass = recipe.get("class")
    if not isinstance(klass, dict):
        return []
    module, qualname = klass.get("module"), klass.get("qualname")
    return [f"{module}.{qualname}"] if isinstance(module, str) and isinstance(qualname, str) else []


def _human(report: dict[str, Any]) -> str:
    lines = [
        f"scan of {report['source']}"
        + (f" (backend {report['backend']})" if report["backend"] else "")
    ]
    for f in report["files"]:
        size = f"{f['size_bytes']} bytes"
        if f["decompressed_bytes"] is not None:
            size += f", {f['decompressed_bytes']} unpacked"
        proto = (
            f", pickle protocol {f['pickle_protocol']}" if f["pickle_protocol"] is not None else ""
        )
        lines.append(
            f"  {Path(f['path']).name}: {f['format']}, {size}{proto}, {f['arrays']} arrays"
        )
        if f["error"]:
            lines.append(f"    DAMAGED: {f['error']}")
        if f.get("refused"):
            lines.append(f"    REFUSED: {f['refused']}")
        lines.append(
            f"    allowed globals ({len(f['allowed_globals'])}): "
            + (", ".join(f["allowed_globals"]) or "-")
        )
        lines.append(
            f"    UNTRUSTED globals ({len(f['untrusted_globals'])}): "
            + (", ".join(f["untrusted_globals"]) or "-")
        )
    for name in report["rebuild_imports"]:
        verdict = "UNTRUSTED" if name in report["untrusted_globals"] else "allowed"
        lines.append(f"  rebuilding the model imports {name} ({verdict})")
    if report["sealed_by_trusted_key"]:
        lines.append("sealed by a key you trust: it loads without --trust")
    elif report["seal"] == "modified":
        lines.append(
            "SEAL BROKEN: sealed by a key you trust, but its manifest changed since; load "
            "refuses it unless --trust"
        )
    elif report["seal"] == "foreign":
        lines.append("sealed by a key you do not trust: it loads as a stranger's file")
    if report["clean"]:
        lines.append("verdict: clean - loads under the default policy")
    elif any(f["error"] for f in report["files"]):
        lines.append("verdict: damaged - it cannot be loaded")
    elif report["sealed_by_trusted_key"]:
        pass
    elif report["untrusted_globals"]:
        names = ", ".join(report["untrusted_globals"])
        lines.append(
            f"verdict: untrusted - loading would import {names}, outside the allow-list; only "
            "if you trust its source, load it with --trust (that runs its code)"
        )
    else:
        lines.append(
            "verdict: refused - it breaks a rule of the restricted reader (REFUSED above), "
            "as no model file written by a pickler does; only --trust would load it, and "
            "that runs its code"
        )
    return "\n".join(lines)
