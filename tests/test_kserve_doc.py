"""docs/kserve.md and deploy/Dockerfile cannot rot: their YAML parses, every command line they
give parses with the real `persistkit serve`, their ports and probe paths are the server's, the
files the image copies build the wheel, and a folder laid out as KServe's /mnt/models serves.

(No container runtime or cluster here: the image is not built, the YAML is not applied.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml

import persistkit
from persistkit.cli.serve import serve
from persistkit.server import ModelRepository, create_app
from serve_helpers import digits, free_port, serving_process, train_digits_model

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "kserve.md"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def yaml_documents() -> list[dict[str, Any]]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.M | re.S)
    return [yaml.safe_load(block) for block in blocks]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml_documents() if doc["kind"] == kind]


def serve_options(args: list[str]) -> dict[str, Any]:
    """``args`` (``serve ...``, as a container passes them) parsed by the real command."""
    assert args[0] == "serve"
    with click.Context(serve) as parent:
        context = serve.make_context("serve", list(args[1:]), parent=parent)
    return context.params


def containers() -> list[dict[str, Any]]:
    runtime = [c for doc in of_kind("ServingRuntime") for c in doc["spec"]["containers"]]
    custom = [
        c
        for doc in of_kind("InferenceService")
        for c in doc["spec"]["predictor"].get("containers", [])
    ]
    return runtime + custom


def routes() -> set[str]:
    app = create_app(ModelRepository(["unused"]))
    return {route.path for route in app.routes if hasattr(route, "path")}


def test_the_doc_gives_a_runtime_and_services_that_parse() -> None:
    kinds = [doc["kind"] for doc in yaml_documents()]
    assert kinds.count("ServingRuntime") == 1
    assert kinds.count("InferenceService") == 3


def test_every_container_command_line_is_one_persistkit_serve_accepts() -> None:
    for container in containers():
        options = serve_options(container["args"])
        assert options["host"] == "0.0.0.0"
        ports = [p["containerPort"] for p in container["ports"]]
        assert ports == [options["port"]] == [8080]


def test_the_runtime_serves_mnt_models_on_kserves_ports() -> None:
    (runtime,) = of_kind("ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    options = serve_options(container["args"])
    assert options["refs"] == ("/mnt/models",)
    assert (options["port"], options["grpc_port"]) == (8080, 8081)
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    annotations = runtime["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(options["port"])
    assert annotations["prometheus.kserve.io/path"] in routes()


def test_the_grpc_service_asks_for_the_port_the_runtime_serves_grpc_on() -> None:
    (runtime,) = of_kind("ServingRuntime")
    grpc_port = serve_options(runtime["spec"]["containers"][0]["args"])["grpc_port"]
    grpc_services = [
        doc["spec"]["predictor"]["model"]
        for doc in of_kind("InferenceService")
        if doc["spec"]["predictor"].get("model", {}).get("protocolVersion") == "grpc-v2"
    ]
    assert [model["ports"] for model in grpc_services] == [
        [{"name": "h2c", "protocol": "TCP", "containerPort": grpc_port}]
    ]


def test_probes_ask_the_servers_own_health_routes_on_its_port() -> None:
    served = routes()
    probes = 0
    for container in containers():
        port = serve_options(container["args"])["port"]
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                probes += 1
                assert container[probe]["httpGet"]["port"] == port
                assert container[probe]["httpGet"]["path"] in served
    assert probes == 3
    assert {"/v2/health/ready", "/v2/health/live"} <= served


def test_every_flag_in_the_table_is_an_option_of_persistkit_serve() -> None:
    table = [line for line in DOC.read_text().splitlines() if line.startswith("| ")]
    named = {flag for row in table for flag in re.findall(r"`(--[a-z-]+)", row.split("|")[2])}
    options = {opt for param in serve.params for opt in param.opts}
    assert named and named <= options
    assert {"--port", "--grpc-port", "--host"} <= named


# --- the Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions(name: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")]


def test_the_images_default_command_is_a_valid_kserve_style_serve() -> None:
    (entrypoint,) = dockerfile_instructions("ENTRYPOINT")
    (command,) = dockerfile_instructions("CMD")
    assert json.loads(entrypoint) == ["persistkit"]
    options = serve_options(json.loads(command))
    assert (options["refs"], options["host"]) == (("/mnt/models",), "0.0.0.0")
    (exposed,) = dockerfile_instructions("EXPOSE")
    assert {int(port) for port in exposed.split()} == {options["port"], options["grpc_port"]}
    (healthcheck,) = dockerfile_instructions("HEALTHCHECK")
    assert f"127.0.0.1:{options['port']}/v2/health/ready" in healthcheck


def test_the_image_runs_as_an_unprivileged_user() -> None:
    assert dockerfile_instructions("USER") == ["10001"]


def test_the_images_extras_exist_and_include_serve_and_grpc() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (default,) = [arg for arg in dockerfile_instructions("ARG") if arg.startswith("EXTRAS=")]
    chosen = default.removeprefix("EXTRAS=").split(",")
    assert {"serve", "grpc"} <= set(chosen) <= set(extras)


def test_the_files_the_image_copies_build_the_wheel(tmp_path: Path) -> None:
    context = tmp_path / "src"
    for copy in dockerfile_instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, target = copy.split()
        assert target.startswith("/src/")
        for source in sources:
            destination = context / target.removeprefix("/src/").rstrip("/")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns(".*"))
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, destination)
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel"],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (context / "dist").glob("*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"persistkit/server/grpc_server.py", "persistkit_sklearn/__init__.py"} <= names


# --- serving a folder laid out as /mnt/models ----------------------------------------------


def test_a_folder_laid_out_as_kserves_mnt_models_is_served(tmp_path: Path) -> None:
    """KServe's storage initializer copies storageUri (a store version's folder) into
    /mnt/models; a pod with its own PERSISTKIT_HOME serves it under the model's name."""
    data = digits()
    model = train_digits_model(data)
    store = persistkit.Store(tmp_path / "store")
    saved = store.save(model, "digits", example=data.rows[:5])
    mnt_models = tmp_path / "mnt" / "models"
    shutil.copytree(saved.path, mnt_models)
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PERSISTKIT_HOME": str(tmp_path / "pod-home")}
    env.pop("PERSISTKIT_STORE", None)
    args = [str(mnt_models), "--port", str(port), "--grpc-port", str(grpc_port)]
    with serving_process([*args, "--log-level", "warning"], port, env):
        rest = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton_http.InferInput("input-0", [3, 64], "FP64")
        tensor.set_data_from_numpy(data.rows[:3])
        answer = rest.infer("digits", [tensor]).as_numpy("output-0")
        grpc_ready = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready(
            "digits"
        )
    assert np.array_equal(answer, model.predict(data.rows[:3]))
    assert grpc_ready


def test_the_ref_that_follows_the_store_runs_with_the_store_url_from_the_environment(
    tmp_path: Path,
) -> None:
    """Way 2 of the doc: the container's own args, the store named only by $PERSISTKIT_STORE
    (a local folder standing in for s3://models)."""
    (container,) = [
        c
        for doc in of_kind("InferenceService")
        for c in doc["spec"]["predictor"].get("containers", [])
    ]
    data = digits()
    store = persistkit.Store(tmp_path / "store")
    store.save(train_digits_model(data), "digits", example=data.rows[:5])
    store.alias("digits:1", "prod")
    port = free_port()
    args = [a.replace("--port=8080", f"--port={port}").replace("0.0.0.0", "127.0.0.1")
            for a in container["args"][1:]]  # fmt: skip
    env = {**os.environ, "PERSISTKIT_HOME": str(tmp_path / "pod-home")}
    env.update({e["name"]: e["value"] for e in container["env"]})
    env["PERSISTKIT_STORE"] = str(tmp_path / "store")
    with serving_process([*args, "--log-level", "warning"], port, env):
        ready = triton_http.InferenceServerClient(f"127.0.0.1:{port}").is_model_ready(
            "digits", "prod"
        )
    assert ready
    assert "PERSISTKIT_STORE" in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("kind", ["ServingRuntime", "InferenceService"])
def test_kubernetes_objects_carry_api_version_and_name(kind: str) -> None:
    for doc in of_kind(kind):
        assert doc["apiVersion"].startswith("serving.kserve.io/")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
