"""The plugin core: discovery, filtering, broken plugins, duplicate backends, the public API
boundary of first-party plugins, and a real third-party plugin distribution."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import persistkit
from persistkit import BackendInfo, hookimpl
from persistkit.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    FormatError,
    ManifestError,
    PluginError,
)
from persistkit.manager import build_plugins, get_plugins, reset_plugins

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = sorted(p for p in (ROOT / "plugins").iterdir() if p.name.startswith("persistkit_"))
PUBLIC_MODULES = {"persistkit", "persistkit.errors", "persistkit.safety", "persistkit.hookspecs"}


class _Declares:
    def __init__(self, *names: str, requires: tuple[str, ...] = ()) -> None:
        self.names = names
        self.requires = requires

    @hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [BackendInfo(n, requires=self.requires, extra="demo") for n in self.names]


def test_first_party_backends_are_found_through_entry_points() -> None:
    names = {b.name for b in persistkit.backends()}
    assert {"pickle", "cloudpickle", "dill", "joblib"} <= names


def test_backends_record_which_plugin_declared_them() -> None:
    by_name = {b.name: b for b in persistkit.backends()}
    assert by_name["joblib"].plugin == "joblib"


def test_env_var_limits_which_plugins_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTKIT_PLUGINS", "pickle,sklearn")
    reset_plugins()
    assert [b.name for b in persistkit.backends()] == ["pickle"]


def test_env_var_disables_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTKIT_DISABLE_PLUGINS", "dill")
    reset_plugins()
    assert "dill" not in {b.name for b in persistkit.backends()}


def test_two_plugins_declaring_one_backend_is_an_error_naming_both() -> None:
    pm_plugins = [_Declares("twin"), _Declares("twin")]
    with pytest.raises(PluginError) as err:
        build_plugins(*pm_plugins, load_entry_points=False)
    message = str(err.value)
    assert "twin" in message and message.count("_Declares") == 2


def test_backend_whose_library_is_missing_is_listed_as_unavailable_with_its_extra() -> None:
    plugins = build_plugins(
        _Declares("ghost", requires=("no_such_module_xyz",)), load_entry_points=False
    )
    info = plugins.backends["ghost"]
    assert not info.available
    assert info.install_hint == 'pip install "persistkit[demo]"'
    with pytest.raises(BackendUnavailableError, match=r"persistkit\[demo\]"):
        plugins.backend("ghost")


def test_unknown_backend_error_lists_the_installed_ones() -> None:
    with pytest.raises(BackendNotFoundError) as err:
        get_plugins().backend("nosuch")
    assert "joblib" in str(err.value) and "pickle" in str(err.value)


def test_broken_third_party_plugin_is_reported_and_skipped(tmp_path: Path) -> None:
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[persistkit]\nbroken = broken_plugin_mod\n")
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom at import')\n")
    code = textwrap.dedent("""
        import warnings, persistkit
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = [b.name for b in persistkit.backends()]
        print("pickle" in names, any("broken" in str(w.message) for w in caught))
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"]


def test_plugin_registered_at_runtime_takes_part_in_saving(tmp_path: Path) -> None:
    class Upper(persistkit.Backend):
        info = BackendInfo("upper", safe=True)
        file_name = "text.txt"

        def save(self, model: object, path: Path, options: dict) -> None:
            path.write_text(str(model).upper())

        def load(self, path: Path, manifest: object, options: dict, policy: object) -> str:
            return path.read_text()

    reset_plugins(build_plugins(Upper()))
    art = persistkit.save("hello", tmp_path / "a", backend="upper")
    assert persistkit.load(art.path) == "HELLO"


@pytest.mark.parametrize("plugin_dir", FIRST_PARTY, ids=lambda p: p.name)
def test_first_party_plugins_import_only_the_public_api(plugin_dir: Path) -> None:
    offending = []
    for source in plugin_dir.rglob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                if module.split(".")[0] == "persistkit" and module not in PUBLIC_MODULES:
                    offending.append(f"{source.name}: {module}")
    assert offending == []


def test_every_hook_is_implemented_by_some_first_party_plugin() -> None:
    pm = get_plugins().pm
    unimplemented = [
        name
        for name in dir(pm.hook)
        if name.startswith("persistkit_") and not getattr(pm.hook, name).get_hookimpls()
    ]
    assert unimplemented == []


def test_third_party_plugin_installs_and_works(tmp_path: Path) -> None:
    """Install examples/persistkit-example-plugin as a real distribution and use it."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(ROOT / "examples" / "persistkit-example-plugin"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    code = textwrap.dedent(f"""
        import persistkit
        info = {{b.name: b for b in persistkit.backends()}}["jsondata"]
        assert info.safe and info.plugin == "jsondata", info
        art = persistkit.save({{"cat": 0, "dog": 1}}, {str(tmp_path / "labels")!r})
        assert art.backend == "jsondata", art.backend
        print(persistkit.load(art.path)["dog"])
    """)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    # it declares its backend, so a fresh process imports it only for a load that needs it
    code = textwrap.dedent(f"""
        import sys, persistkit
        from persistkit.manager import get_plugins
        get_plugins()
        before = "persistkit_jsondata" in sys.modules
        data = persistkit.load({str(tmp_path / "labels")!r})
        print(before, "persistkit_jsondata" in sys.modules, data["cat"])
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "0"]


def test_no_warning_when_all_plugins_load() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reset_plugins()
        get_plugins()


class _MarkedFolder:
    """A folder format of another tool: a folder holding MARK, read from the opened files."""

    @persistkit.hookimpl
    def persistkit_backends(self) -> list[BackendInfo]:
        return [BackendInfo("marked", safe=True)]

    @persistkit.hookimpl
    def persistkit_sniff(self, path: Path, head: bytes) -> str | None:
        return "marked" if path.is_dir() and (path / "MARK").is_file() else None

    @persistkit.hookimpl
    def persistkit_load(self, backend: str, manifest: object, files: object) -> object:
        if backend != "marked":
            return None
        return {name: files[name].read_bytes() for name in files.files}  # type: ignore[attr-defined]


def test_a_folder_a_plugin_recognises_loads_with_every_file_opened(tmp_path: Path) -> None:
    reset_plugins(build_plugins(_MarkedFolder()))
    folder = tmp_path / "theirs"
    (folder / "sub").mkdir(parents=True)
    (folder / "MARK").write_bytes(b"")
    (folder / "sub" / "w.bin").write_bytes(b"123")
    assert persistkit.load(folder) == {"MARK": b"", "sub/w.bin": b"123"}
    assert persistkit.inspect(str(folder)).backend == "marked"
    (folder / "link").symlink_to(folder / "MARK")
    with pytest.raises(FormatError, match="link"):
        persistkit.load(folder)


def test_a_folder_no_plugin_recognises_is_still_not_an_artifact(tmp_path: Path) -> None:
    reset_plugins(build_plugins(_MarkedFolder()))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("x")
    with pytest.raises(ManifestError, match="not a persistkit artifact"):
        persistkit.load(tmp_path / "plain")
