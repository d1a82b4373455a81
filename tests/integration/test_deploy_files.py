"""The deployment files (docker-compose.yml, the LMCache configs, k8s/), checked offline.

No Docker engine and no Kubernetes cluster run here, and none of these tests starts one:

- docker-compose.yml goes through a real Compose implementation's own `config` command
  (Debian's docker-compose 1.29, installed by scripts/setup-system.sh), and its
  structure is checked against what a deployment needs (profiles, a scalable worker,
  GPU reservations, ports that agree with the LMCache configs);
- every kustomization under k8s/ is rendered (by the small renderer below, and by the
  kustomize inside `kubectl kustomize` where kubectl is installed) and every object is
  validated strictly against the Kubernetes 1.37 schemas (kubernetes-validate); the
  ServiceMonitor, a CRD without a built-in schema, is checked field by field;
- every Locust and `kvswarm sim` command line in these files is parsed by the real parsers.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import REPO

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (requirements-dev.txt)"
)

COMPOSE_FILE = REPO / "docker-compose.yml"
K8S = REPO / "k8s"
KUSTOMIZATIONS = ("base", "overlays/hpa", "overlays/prometheus-operator")
KUBERNETES_VERSION = "1.37.0"

PROFILES = {
    "sim": {"sim-non-disagg", "sim-pd"},
    "pd": {"mooncake-master", "vllm-prefiller", "vllm-decoder", "vllm-proxy"},
    "non-disagg": {"vllm-server"},
    "observability": {"prometheus", "grafana"},
}
LOAD_GENERATOR = {"locust-master", "locust-worker"}
GPU_SERVICES = ("vllm-prefiller", "vllm-decoder", "vllm-server")

# Keys of LMCache's config file that the configs use (LMCache's lmcache/v1/config.py), and
# the keys its Mooncake store connector reads from extra_config.
LMCACHE_KEYS = {
    "chunk_size", "local_cpu", "max_local_cpu_size", "remote_url", "remote_serde",
    "retrieve_locations", "store_location", "save_unfull_chunk", "save_decode_cache",
    "enable_pd", "pd_role", "transfer_channel", "nixl_backends", "pd_proxy_host",
    "pd_proxy_port", "pd_buffer_size", "pd_buffer_device", "pd_peer_host",
    "pd_peer_init_port", "pd_peer_alloc_port", "extra_config",
}  # fmt: skip
MOONCAKE_EXTRA_KEYS = {
    "local_hostname", "metadata_server", "global_segment_size", "local_buffer_size",
    "protocol", "device_name", "master_server_address", "transfer_timeout",
    "storage_root_dir", "prefer_local_alloc",
}  # fmt: skip


# --------------------------------------------------------------------------- helpers --


def clean_environment() -> dict[str, str]:
    """This process's environment without what would change how the files are read."""
    prefixes = ("COMPOSE_", "DOCKER_", "LOCUST_", "KVSWARM_")
    names = {"MODEL", "HF_TOKEN", "KVSWARM_TARGET", "VLLM_IMAGE", "LMCACHE_IMAGE"}
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(prefixes) and name not in names
    }


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.skip(
            "docker-compose is not installed: scripts/setup-system.sh installs "
            "Debian's (needs root)"
        )
    return subprocess.run(
        [executable, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def command_line(service: dict[str, Any]) -> list[str]:
    """The service's command as argv (a `bash -c` script is split into its words)."""
    command = service["command"]
    if isinstance(command, str):
        return shlex.split(command)
    if service.get("entrypoint", [])[-1:] == ["-c"]:
        return shlex.split(command[0].replace("\\\n", " "), comments=True)
    return [str(word) for word in command]


def option(argv: list[str], name: str) -> str:
    """The value of `name` in argv, given as `name value` or `name=value`."""
    for index, word in enumerate(argv):
        if word == name:
            return argv[index + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def published_targets(service: dict[str, Any]) -> set[int]:
    return {int(str(port).split(":")[-1]) for port in service.get("ports", [])}


def lmcache_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "configs" / name).read_text())


def parse_command_lines(locust: list[list[str]], kvswarm: list[list[str]]) -> dict[str, list]:
    """Each argv parsed by Locust's parser (with kvswarm's options) or by `kvswarm`'s.

    Runs in a child process, so that importing kvswarm's Locust glue leaves this one
    alone. Returns, per argv, None or the parser's error message.
    """
    script = """
import contextlib, io, json, sys
import kvswarm.locust.plugin  # adds the --kv-* options to Locust's parser
from locust.argument_parser import get_parser
from kvswarm.cli import build_parser

def error(parse, argv):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parse(argv)
    except SystemExit as exc:
        return stderr.getvalue().strip() or f"exit code {exc.code}"
    return None

todo = json.loads(sys.argv[1])
print(json.dumps({
    "locust": [error(lambda a: get_parser(default_config_files=[]).parse_args(a), argv)
               for argv in todo["locust"]],
    "kvswarm": [error(lambda a: build_parser().parse_args(a), argv)
                for argv in todo["kvswarm"]],
}))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script, json.dumps({"locust": locust, "kvswarm": kvswarm})],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------ docker-compose.yml --


INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


def with_defaults(text: str) -> str:
    """Compose's variable interpolation, every variable unset: `${X:-d}` is d, `$$` is $."""
    return INTERPOLATION.sub(lambda m: "$" if m.group(0) == "$$" else m.group(2) or "", text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as a Compose implementation reads it with no variable set."""
    return yaml.safe_load(with_defaults(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_docker_compose_config_accepts_the_file_with_every_profile() -> None:
    completed = docker_compose(
        "--profile",
        "sim",
        "--profile",
        "pd",
        "--profile",
        "non-disagg",
        "--profile",
        "observability",
        "config",
        "-q",
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == "", "docker-compose warned: " + completed.stderr


def test_docker_compose_resolves_each_service_into_its_profile() -> None:
    # docker-compose 1.29 lists every service in `config` and applies profiles at `up`;
    # what its resolved file says is what `up --profile ...` will start.
    completed = docker_compose("config")
    assert completed.returncode == 0, completed.stderr
    resolved = yaml.safe_load(completed.stdout)["services"]
    for name in LOAD_GENERATOR:
        assert "profiles" not in resolved[name], f"{name} must start without a profile"
    for profile, names in PROFILES.items():
        for name in names:
            assert resolved[name]["profiles"] == [profile], name
    assert set(resolved) == LOAD_GENERATOR.union(*PROFILES.values())


def test_docker_compose_interpolates_the_defaults() -> None:
    completed = docker_compose("--profile", "non-disagg", "config")
    assert completed.returncode == 0, completed.stderr
    resolved = yaml.safe_load(completed.stdout)["services"]
    server = resolved["vllm-server"]["command"]
    assert server[0] == "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"
    assert "--max-model-len=32768" in server
    assert resolved["locust-master"]["environment"]["LOCUST_HOST"] == "http://sim-non-disagg:8000"


def test_compose_file_has_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_compose_profiles_group_the_services(services: dict[str, dict[str, Any]]) -> None:
    for name in LOAD_GENERATOR:
        assert "profiles" not in services[name], f"{name} must start without a profile"
    for profile, names in PROFILES.items():
        for name in names:
            assert services[name].get("profiles") == [profile], name
    assert set(services) == LOAD_GENERATOR.union(*PROFILES.values())


def test_master_and_workers_are_built_from_the_one_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    assert (REPO / "Dockerfile").is_file()
    for name in ("locust-master", "locust-worker", "sim-non-disagg", "sim-pd", "mooncake-master"):
        assert services[name]["build"] in (".", {"context": "."}), name
        assert services[name]["image"] == services["locust-master"]["image"], name


def test_locust_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["locust-worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"locust-worker has {key}: --scale would collide"
    argv = command_line(worker)
    assert "--worker" in argv
    assert option(argv, "--master-host") == "locust-master"
    master_argv = command_line(services["locust-master"])
    assert option(argv, "--master-port") == option(master_argv, "--master-bind-port")


def test_locust_master_publishes_web_ui_master_and_exporter_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    master = services["locust-master"]
    assert {8089, 5557, 9646} <= published_targets(master)
    argv = command_line(master)
    assert "--master" in argv
    assert option(argv, "--web-port") == "8089"


def test_load_generator_mounts_locustfiles_configs_and_results(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in LOAD_GENERATOR:
        sources = {volume.split(":")[0] for volume in services[name]["volumes"]}
        assert {"./locustfiles", "./configs", "./results"} <= sources, name


def test_observability_profile_runs_prometheus_on_our_config_and_grafana_as_admin(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./configs/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert 9090 in published_targets(prometheus)
    assert "./configs/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./configs/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    environment = grafana["environment"]
    assert (environment["GF_SECURITY_ADMIN_USER"], environment["GF_SECURITY_ADMIN_PASSWORD"]) == (
        "admin",
        "admin",
    )
    assert 3000 in published_targets(grafana)


def test_prometheus_scrapes_what_the_compose_services_serve(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((REPO / "configs" / "prometheus.yml").read_text())
    master = services["locust-master"]
    assert master["environment"]["KVSWARM_EXPORTER_BIND"] == "0.0.0.0"
    exporter_port = int(master["environment"]["KVSWARM_EXPORTER_PORT"])
    assert exporter_port in published_targets(master)
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{job['job_name']}: {target}: no such service"
                if job["job_name"] == "kvswarm":
                    assert (host, int(port)) == ("locust-master", exporter_port)
                else:
                    assert int(port) in published_targets(services[host]), target


def test_vllm_services_reserve_nvidia_gpus(services: dict[str, dict[str, Any]]) -> None:
    for name in GPU_SERVICES:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices, name
        for device in devices:
            assert device["driver"] == "nvidia", name
            assert "gpu" in device["capabilities"], name
            assert device["device_ids"], name
        assert services[name].get("ipc") == "host" or "shm_size" in services[name], name


def test_vllm_services_cache_prefixes_and_report_cached_tokens(
    services: dict[str, dict[str, Any]],
) -> None:
    ports = {"vllm-server": "8000", "vllm-prefiller": "8100", "vllm-decoder": "8200"}
    for name, port in ports.items():
        argv = command_line(services[name])
        assert "--enable-prefix-caching" in argv, name
        assert "--enable-prompt-tokens-details" in argv, name
        assert option(argv, "--port") == port, name
        assert int(port) in published_targets(services[name]), name
        assert "HF_TOKEN" in services[name]["environment"], name
        assert any(v.endswith(":/root/.cache/huggingface") for v in services[name]["volumes"])


@pytest.mark.parametrize(
    ("name", "role", "config"),
    [
        ("vllm-prefiller", "kv_producer", "mooncake-prefiller-config.yaml"),
        ("vllm-decoder", "kv_consumer", "mooncake-decoder-config.yaml"),
    ],
)
def test_pd_instances_use_lmcache_with_their_mooncake_config(
    services: dict[str, dict[str, Any]], name: str, role: str, config: str
) -> None:
    service = services[name]
    transfer = json.loads(option(command_line(service), "--kv-transfer-config"))
    assert transfer["kv_connector"] == "LMCacheConnectorV1"
    assert transfer["kv_role"] == role
    config_file = service["environment"]["LMCACHE_CONFIG_FILE"]
    assert config_file == f"/configs/{config}"
    assert "./configs:/configs:ro" in service["volumes"]
    assert (REPO / "configs" / config).is_file()


def test_pd_ports_agree_between_proxy_instances_and_lmcache_configs(
    services: dict[str, dict[str, Any]],
) -> None:
    proxy = command_line(services["vllm-proxy"])
    prefiller, decoder = (
        lmcache_config("mooncake-prefiller-config.yaml"),
        lmcache_config("mooncake-decoder-config.yaml"),
    )
    assert option(proxy, "--port") == "9000"
    assert 9000 in published_targets(services["vllm-proxy"])
    assert option(proxy, "--prefiller-host") == "vllm-prefiller"
    assert option(proxy, "--prefiller-port") == option(
        command_line(services["vllm-prefiller"]), "--port"
    )
    assert option(proxy, "--decoder-host") == "vllm-decoder" == decoder["pd_peer_host"]
    assert option(proxy, "--decoder-port") == option(
        command_line(services["vllm-decoder"]), "--port"
    )
    assert int(option(proxy, "--decoder-init-port")) == decoder["pd_peer_init_port"]
    assert int(option(proxy, "--decoder-alloc-port")) == decoder["pd_peer_alloc_port"]
    assert prefiller["pd_proxy_host"] == "vllm-proxy"
    assert int(option(proxy, "--proxy-port")) == prefiller["pd_proxy_port"]


def test_mooncake_master_ports_agree_with_the_lmcache_configs(
    services: dict[str, dict[str, Any]],
) -> None:
    argv = command_line(services["mooncake-master"])
    rpc_port = int(option(argv, "--rpc_port"))
    metadata_port = int(option(argv, "--http_metadata_server_port"))
    assert rpc_port == 50052
    assert int(option(argv, "--metrics_port")) == 9003
    assert {50052, 9003} <= published_targets(services["mooncake-master"])
    for name in ("mooncake-prefiller-config.yaml", "mooncake-decoder-config.yaml"):
        config = lmcache_config(name)
        assert config["remote_url"] == f"mooncakestore://mooncake-master:{rpc_port}/", name
        extra = config["extra_config"]
        assert extra["master_server_address"] == f"mooncake-master:{rpc_port}", name
        assert extra["metadata_server"] == f"http://mooncake-master:{metadata_port}/metadata"


def test_mooncake_master_flags_exist_in_the_mooncake_wheel(
    services: dict[str, dict[str, Any]],
) -> None:
    spec = importlib.util.find_spec("mooncake")
    folders = spec.submodule_search_locations if spec is not None else None
    binary = Path(folders[0]) / "mooncake_master" if folders else None
    if binary is None or not binary.is_file():
        pytest.skip("the mooncake extra (mooncake_master) is not installed")
    completed = subprocess.run(
        [binary, "--helpfull"], capture_output=True, text=True, timeout=60, check=False
    )
    known = set(re.findall(r"^\s+-(\w+) \(", completed.stdout + completed.stderr, re.M))
    assert "rpc_port" in known, completed.stderr[-500:]
    for word in command_line(services["mooncake-master"]):
        assert word.lstrip("-").split("=")[0] in known, word


@pytest.mark.parametrize("name", ["mooncake-prefiller-config.yaml", "mooncake-decoder-config.yaml"])
def test_lmcache_config_uses_known_keys_and_a_mooncake_store(name: str) -> None:
    config = lmcache_config(name)
    assert set(config) <= LMCACHE_KEYS, set(config) - LMCACHE_KEYS
    assert set(config["extra_config"]) <= MOONCAKE_EXTRA_KEYS
    assert config["chunk_size"] == 256
    assert config["extra_config"]["protocol"] in ("tcp", "rdma")
    # What LMCache's own validation demands of PD mode.
    assert config["enable_pd"] is True
    for key in ("pd_role", "pd_buffer_size", "pd_buffer_device"):
        assert config[key] is not None, key
    if config["pd_role"] == "receiver":
        assert config["retrieve_locations"] == ["PDBackend"]
        assert config.get("store_location") != "PDBackend"
    else:
        assert config["pd_role"] == "sender"


def test_every_key_of_the_lmcache_configs_is_commented() -> None:
    for name in ("mooncake-prefiller-config.yaml", "mooncake-decoder-config.yaml"):
        lines = (REPO / "configs" / name).read_text().splitlines()
        for index, line in enumerate(lines):
            if re.match(r"^\s*\w+:", line):
                assert lines[index - 1].lstrip().startswith("#"), f"{name}:{index + 1}: {line}"


def test_lmcache_configs_agree_on_chunking_and_serialisation() -> None:
    prefiller = lmcache_config("mooncake-prefiller-config.yaml")
    decoder = lmcache_config("mooncake-decoder-config.yaml")
    for key in ("chunk_size", "remote_url", "remote_serde", "transfer_channel"):
        assert prefiller[key] == decoder[key], key
    assert prefiller["extra_config"]["local_hostname"] == "vllm-prefiller"
    assert decoder["extra_config"]["local_hostname"] == "vllm-decoder"


# -------------------------------------------------------- Dockerfile, context --


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def ignored_by_dockerignore(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""

    def matches(pattern: str, candidate: str) -> bool:
        regex = "".join(
            ".*" if part == "**" else re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            for part in re.split(r"(\*\*)", pattern.strip("/"))
        )
        return re.fullmatch(regex, candidate) is not None

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(matches(pattern.lstrip("!"), candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerfile_copies_what_the_build_context_holds() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copies = [args.split() for name, args in dockerfile_instructions() if name == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored_by_dockerignore(source.rstrip("/"), patterns), source
    for kept in ("lib/kvswarm/cli.py", "locustfiles/scenarios.py", "configs/test_config.yaml"):
        assert not ignored_by_dockerignore(kept, patterns), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "results/x/requests.csv", "tests/conftest.py"):
        assert ignored_by_dockerignore(dropped, patterns), dropped
    assert ignored_by_dockerignore("lib/kvswarm/__pycache__/cli.cpython-311.pyc", patterns)


def test_dockerfile_builds_one_unprivileged_locust_image() -> None:
    instructions = dockerfile_instructions()
    (base,) = [args for name, args in instructions if name == "FROM"]
    assert base.startswith("python:3.11-slim")
    (user,) = [args for name, args in instructions if name == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    (entrypoint,) = [args for name, args in instructions if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["locust"]
    exposed = {port for name, args in instructions if name == "EXPOSE" for port in args.split()}
    assert {"8089", "5557", "9646"} <= exposed
    run = " ".join(args for name, args in instructions if name == "RUN")
    assert "requirements" in run and "pip install -e '.[mooncake]'" in run


# ------------------------------------------------------------------------- k8s/ --


KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "images", "patches"}


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build` makes of `directory`, without name-hash suffixes.

    Knows the parts of kustomize that k8s/ uses (resources, configMapGenerator with files
    and literals, JSON 6902 patches, images) and fails on any other key.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: this renderer does not know {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        objects.append(generated_config_map(directory, generator))
    for patch in kustomization.get("patches", []):
        apply_json_patch(objects, patch)
    for image in kustomization.get("images", []):
        set_image(objects, image)
    return objects


def generated_config_map(directory: Path, generator: dict[str, Any]) -> dict[str, Any]:
    assert set(generator) <= {"name", "files", "literals"}, generator
    data: dict[str, str] = {}
    for source in generator.get("files") or []:
        key, _, path = source.rpartition("=")
        data[key or Path(path).name] = (directory / path).read_text()
    for literal in generator.get("literals") or []:
        key, _, value = literal.partition("=")
        data[key] = value
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
    }


def apply_json_patch(objects: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    target = patch["target"]
    matches = [
        obj
        for obj in objects
        if obj["kind"] == target["kind"] and obj["metadata"]["name"] == target["name"]
    ]
    assert len(matches) == 1, f"patch target {target} matches {len(matches)} objects"
    for operation in yaml.safe_load(patch["patch"]):
        *parents, last = operation["path"].strip("/").split("/")
        node = matches[0]
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] == "remove":
            del node[last]
        elif operation["op"] in ("add", "replace"):
            node[last] = operation["value"]
        else:
            raise AssertionError(f"this renderer does not know op {operation['op']}")


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["spec"]["template"]["spec"]


def all_containers(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for spec in pod_specs(objects):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def image_name(image: str) -> str:
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":")[0]


def set_image(objects: list[dict[str, Any]], image: dict[str, Any]) -> None:
    for container in all_containers(objects):
        if image_name(container["image"]) == image["name"]:
            new = image.get("newName", image["name"])
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
            else:
                tag = (
                    image.get("newTag")
                    or container["image"][len(image_name(container["image"])) + 1 :]
                )
                container["image"] = f"{new}:{tag}" if tag else new


def validate(obj: dict[str, Any]) -> None:
    """Raise when `obj` is not a valid object of Kubernetes 1.37 (or a valid ServiceMonitor)."""
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        check_service_monitor(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


SERVICE_MONITOR_SPEC_KEYS = {
    "selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
    "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit",
    "labelValueLengthLimit", "attachMetadata", "scrapeProtocols", "keepDroppedTargets",
}  # fmt: skip
SERVICE_MONITOR_ENDPOINT_KEYS = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
    "honorLabels", "honorTimestamps", "trackTimestampsStaleness", "relabelings",
    "metricRelabelings", "tlsConfig", "bearerTokenSecret", "authorization", "basicAuth",
    "oauth2", "followRedirects", "enableHttp2", "filterRunning", "proxyUrl",
}  # fmt: skip
DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")


def duration_s(text: str) -> float:
    match = DURATION.match(text)
    if not text or match is None:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    units = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
    return sum(int(match.group(2 * i + 2) or 0) * unit for i, unit in enumerate(units))


def check_service_monitor(obj: dict[str, Any]) -> None:
    """The ServiceMonitor CRD's (monitoring.coreos.com/v1) rules that matter here."""
    problems = []
    if obj.get("apiVersion") != "monitoring.coreos.com/v1" or obj.get("kind") != "ServiceMonitor":
        problems.append("apiVersion/kind must be monitoring.coreos.com/v1 ServiceMonitor")
    if not isinstance(obj.get("metadata", {}).get("name"), str):
        problems.append("metadata.name missing")
    spec = obj.get("spec", {})
    problems += [f"spec.{key}: unknown field" for key in set(spec) - SERVICE_MONITOR_SPEC_KEYS]
    labels = spec.get("selector", {}).get("matchLabels")
    if not labels or not all(isinstance(v, str) for v in labels.values()):
        problems.append("spec.selector.matchLabels must map label names to strings")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append("spec.endpoints must be a non-empty list")
        endpoints = []
    for index, endpoint in enumerate(endpoints):
        where = f"spec.endpoints[{index}]"
        unknown = set(endpoint) - SERVICE_MONITOR_ENDPOINT_KEYS
        problems += [f"{where}.{key}: unknown field" for key in unknown]
        if not isinstance(endpoint.get("port"), str) and "targetPort" not in endpoint:
            problems.append(f"{where}: needs port (a Service port name) or targetPort")
        if not str(endpoint.get("path", "/")).startswith("/"):
            problems.append(f"{where}.path must start with /")
        try:
            interval = duration_s(endpoint.get("interval", "30s"))
            if duration_s(endpoint.get("scrapeTimeout", "10s")) > interval:
                problems.append(f"{where}: scrapeTimeout longer than interval")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid(path: str) -> None:
    objects = render(K8S / path)
    assert objects
    errors = []
    for obj in objects:
        try:
            validate(obj)
        except Exception as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_same_valid_objects(path: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: its kustomize is the second renderer")
    completed = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(K8S / path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    objects = [doc for doc in yaml.safe_load_all(completed.stdout) if doc]
    for obj in objects:
        validate(obj)

    def identity(obj: dict[str, Any], hashed: bool) -> tuple[str, str]:
        name = obj["metadata"]["name"]
        if hashed and obj["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0]  # kustomize's content-hash suffix
        return obj["kind"], name

    ours = sorted(identity(obj, hashed=False) for obj in render(K8S / path))
    assert sorted(identity(obj, hashed=True) for obj in objects) == ours


def test_validation_rejects_a_broken_deployment(base: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(find(base, "Deployment", "kvswarm-worker"))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    misspelt = copy.deepcopy(find(base, "Deployment", "kvswarm-worker"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelt)


def test_service_monitor_check_rejects_a_broken_one() -> None:
    (monitor,) = [
        o for o in render(K8S / "overlays/prometheus-operator") if o["kind"] == "ServiceMonitor"
    ]
    validate(monitor)
    for mutate in (
        lambda m: m["spec"]["endpoints"][0].pop("port"),
        lambda m: m["spec"]["endpoints"][0].update(interval="5 seconds"),
        lambda m: m["spec"].update(endpoint=[]),
        lambda m: m["spec"]["selector"].pop("matchLabels"),
    ):
        broken = copy.deepcopy(monitor)
        mutate(broken)
        with pytest.raises(ValueError):
            validate(broken)


def test_master_service_exposes_master_web_and_exporter_ports(base: list[dict[str, Any]]) -> None:
    service = find(base, "Service", "kvswarm-master")
    master = find(base, "Deployment", "kvswarm-master")
    pod = master["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    assert ports == {"master": 5557, "web": 8089, "metrics": 9646}
    container_ports = {
        port["name"]: port["containerPort"] for port in pod["spec"]["containers"][0]["ports"]
    }
    assert container_ports == ports
    assert master["spec"]["replicas"] == 1


def test_master_pod_is_annotated_for_prometheus(base: list[dict[str, Any]]) -> None:
    annotations = find(base, "Deployment", "kvswarm-master")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9646"


def test_the_master_serves_the_exporter_on_the_service_metrics_port(
    base: list[dict[str, Any]],
) -> None:
    settings = find(base, "ConfigMap", "kvswarm-settings")["data"]
    assert settings["KVSWARM_EXPORTER_BIND"] == "0.0.0.0"
    service = find(base, "Service", "kvswarm-master")
    (metrics,) = [port for port in service["spec"]["ports"] if port["name"] == "metrics"]
    assert int(settings["KVSWARM_EXPORTER_PORT"]) == metrics["port"]
    container = find(base, "Deployment", "kvswarm-master")["spec"]["template"]["spec"]
    sources = container["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": "kvswarm-settings"}} in sources


def test_workers_reach_the_master_service(base: list[dict[str, Any]]) -> None:
    worker = find(base, "Deployment", "kvswarm-worker")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--worker" in args
    assert option(args, "--master-host") == "kvswarm-master"
    assert option(args, "--master-port") == "5557"
    assert worker["spec"]["replicas"] == 2


def test_pods_run_unprivileged_with_resources_and_a_master_readiness_probe(
    base: list[dict[str, Any]],
) -> None:
    for spec in pod_specs(base):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
    for container in all_containers(base):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
    master = find(base, "Deployment", "kvswarm-master")["spec"]["template"]["spec"]
    probe = master["containers"][0]["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/", "web")


def test_pods_reference_only_generated_config_maps(base: list[dict[str, Any]]) -> None:
    config_maps = {o["metadata"]["name"] for o in base if o["kind"] == "ConfigMap"}
    for spec in pod_specs(base):
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for container in spec.get("initContainers", []) + spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps


def test_config_maps_carry_every_locustfile_and_config(base: list[dict[str, Any]]) -> None:
    locustfiles = find(base, "ConfigMap", "kvswarm-locustfiles")["data"]
    configs = find(base, "ConfigMap", "kvswarm-configs")["data"]
    assert set(locustfiles) == {p.name for p in (REPO / "locustfiles").glob("*.py")}
    assert set(configs) == {p.name for p in (REPO / "configs").glob("*.yaml")}


def test_image_is_kvswarm_latest_and_overridable(base: list[dict[str, Any]]) -> None:
    assert {c["image"] for c in all_containers(base)} == {"kvswarm:latest"}
    override = {"name": "kvswarm", "newName": "registry.example.com/kvswarm", "newTag": "v1"}
    objects = copy.deepcopy(base)
    set_image(objects, override)
    assert {c["image"] for c in all_containers(objects)} == {"registry.example.com/kvswarm:v1"}


def test_kubectl_kustomize_overrides_the_image_from_an_overlay(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: its kustomize is the second renderer")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "base", tmp_path)],
                "images": [
                    {"name": "kvswarm", "newName": "registry.example.com/kvswarm", "newTag": "v1"}
                ],
            }
        )
    )
    completed = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    objects = [doc for doc in yaml.safe_load_all(completed.stdout) if doc]
    assert {c["image"] for c in all_containers(objects)} == {"registry.example.com/kvswarm:v1"}


def test_hpa_overlay_scales_the_workers_and_owns_their_count() -> None:
    objects = render(K8S / "overlays/hpa")
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "kvswarm-worker")
    assert "replicas" not in find(objects, "Deployment", "kvswarm-worker")["spec"]
    assert (
        hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )


def test_service_monitor_selects_the_master_service_exporter_port() -> None:
    objects = render(K8S / "overlays/prometheus-operator")
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    service = find(objects, "Service", "kvswarm-master")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert (
        {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == {"metrics"} <= port_names
    )


# ------------------------------------------------- command lines in both deployments --


def test_every_locust_and_sim_command_line_parses(
    services: dict[str, dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    locust = [command_line(services[name]) for name in sorted(LOAD_GENERATOR)]
    settings = find(base, "ConfigMap", "kvswarm-settings")["data"]
    for spec in pod_specs(base):
        args = spec["containers"][0]["args"]
        locust.append([re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], a) for a in args])
    kvswarm = [command_line(services[name]) for name in sorted(PROFILES["sim"])]
    for name in PROFILES["sim"]:
        assert services[name]["entrypoint"] == ["kvswarm"]
    result = parse_command_lines(locust, kvswarm)
    problems = [
        f"{argv}: {error}"
        for kind, argvs in (("locust", locust), ("kvswarm", kvswarm))
        for argv, error in zip(argvs, result[kind], strict=True)
        if error
    ]
    assert not problems, "\n".join(problems)
