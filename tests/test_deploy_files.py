"""The deployment files cannot run here (no Docker engine, no cloud, no Kubernetes), so they are
checked the way their tools would read them: the cluster launcher config with Ray's own validator,
the KubeRay manifests against the v1 CRD schemas, and all of them against each other (one image,
one set of settings) and against secrets written in the open. Each check is also shown to fail on
a broken copy, so a check that accepts anything cannot pass unnoticed."""
from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY_CRDS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "kuberay"
COMPOSE = ROOT / "docker-compose.yml"
LAUNCHER = ROOT / "cluster" / "ray-cluster.yaml"
RAYCLUSTER = ROOT / "cluster" / "kuberay" / "raycluster.yaml"
RAYJOB = ROOT / "cluster" / "kuberay" / "rayjob.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
# ObjectMeta fields a manifest may set; the CRDs leave the top-level metadata to Kubernetes.
OBJECT_META_KEYS = {"name", "namespace", "labels", "annotations"}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
SHARED_SETTINGS = ("image", "RAY_AUTH_MODE", "SEGQ_STORAGE", "gcs_port", "dashboard_port")
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|REDIS_URL|API_KEY|ACCESS_KEY")
# A credential may only be a reference: ${VAR}, $(VAR), $VAR, or a PLACEHOLDER in a comment.
REFERENCE = re.compile(r"\$\{\w+[^}]*\}|\$\(\w+\)|\$\w+|[A-Z][A-Z_]*")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- docker compose ---------------------------------------------------------------------------

def test_compose_services_follow_the_security_and_port_defaults():
    services = load(COMPOSE)["services"]
    assert {"redis", "ray-head", "ray-worker", "aggregator"} <= set(services)
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync everysec" in redis_command
    assert "--requirepass" not in redis_command  # `ps` would show it
    assert all(port.startswith("127.0.0.1:") for name in ("redis", "ray-head") for port in services[name]["ports"])
    head = " ".join(services["ray-head"]["command"])
    assert "--port=6379" not in head and "--dashboard-port=8265" in head
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    build = services["ray-head"]["build"]
    assert DOCKERFILE.exists() and build["context"] == "." and build["args"]["TORCH_VARIANT"].startswith("cu")
    # The other services run the image ray-head builds, never one pulled under the same name.
    assert all(services[name]["pull_policy"] == "never" for name in ("ray-worker", "aggregator"))


def test_compose_redis_command_requires_the_password_without_showing_it(tmp_path):
    """The redis service's shell command, run here as compose would run it ($$ is a literal $):
    Redis asks for the password, and no process command line holds it."""
    import redis

    from cluster.local import free_port, wait_for_port

    service = load(COMPOSE)["services"]["redis"]
    assert service["command"][:2] == ["sh", "-c"] and "SEGQ_REDIS_PASSWORD" in service["environment"]
    port, password = free_port(), "not-in-ps-4c1e9b"
    script = service["command"][2].replace("$$", "$").replace("/tmp/secret.conf", str(tmp_path / "secret.conf"))
    script += f" --port {port} --bind 127.0.0.1 --dir {tmp_path} --save ''"
    process = subprocess.Popen(["sh", "-c", script], env={"PATH": os.environ["PATH"], "SEGQ_REDIS_PASSWORD": password},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 20, "redis-server", process.pid)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert redis.Redis(port=port, password=password).ping()
        assert (tmp_path / "secret.conf").stat().st_mode & 0o077 == 0
        command_lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "redis-server" in command_lines and password not in command_lines
    finally:
        process.terminate()
        process.wait(20)


# --- Ray cluster launcher ---------------------------------------------------------------------

def launcher_errors(config: dict) -> list[str]:
    """What `ray up` would reject before starting a node: Ray's own defaults merge and validator."""
    from ray.autoscaler._private.providers import _NODE_PROVIDERS
    from ray.autoscaler._private.util import prepare_config, validate_config

    if config.get("provider", {}).get("type") not in _NODE_PROVIDERS:
        return [f"provider.type {config.get('provider', {}).get('type')!r} is not one Ray knows"]
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (jsonschema.ValidationError, ValueError, KeyError) as error:
        return [str(error).splitlines()[0]]
    return []


def test_launcher_config_passes_rays_own_validation():
    config = load(LAUNCHER)
    assert launcher_errors(config) == []
    types = config["available_node_types"]
    workers = [name for name in types if name != config["head_node_type"]]
    assert workers and all(types[name]["resources"].get("GPU", 0) >= 1 for name in workers)
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    # The image is no nvidia/cuda one, so Ray's NVIDIA runtime alone would show the container no GPU.
    assert "--gpus=all" in config["docker"].get("worker_run_options", [])


def misspell_top_level_key(config):
    config["head_start_ray_command"] = config.pop("head_start_ray_commands")


def give_a_gpu_count_as_text(config):
    config["available_node_types"]["gpu-worker"]["resources"]["GPU"] = "1"


def name_a_missing_head_type(config):
    config["head_node_type"] = "ray.head.default"


@pytest.mark.parametrize("break_it", [misspell_top_level_key, give_a_gpu_count_as_text, name_a_missing_head_type])
def test_launcher_validation_rejects_a_broken_config(break_it):
    config = load(LAUNCHER)
    break_it(config)
    assert launcher_errors(config)


# --- KubeRay ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crds() -> dict[str, tuple[dict, dict]]:
    """Each kind's CRD and its v1 schema (the C loader: the CRDs are 40,000 lines)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.load((KUBERAY_CRDS / name).read_text(), Loader=loader)
        version = next(version for version in crd["spec"]["versions"] if version["name"] == "v1")
        found[kind] = crd, version["schema"]["openAPIV3Schema"]
    return found


def unknown_fields(instance, schema: dict, path: str) -> list[str]:
    """Keys the schema does not declare. jsonschema lets them pass; Kubernetes drops them (or,
    with strict field validation, refuses the manifest), so a misspelled field is silently lost."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(instance, dict):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        found = []
        for key, value in instance.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif properties is not None or extra is False:
                found.append(f"{path}.{key}")
        return found
    if isinstance(instance, list) and "items" in schema:
        return [field for index, item in enumerate(instance)
                for field in unknown_fields(item, schema["items"], f"{path}[{index}]")]
    return []


def manifest_errors(manifest: dict, crds: dict[str, tuple[dict, dict]]) -> list[str]:
    kind = manifest.get("kind")
    if kind not in crds:
        return [f"kind {kind!r} is none of {sorted(crds)}"]
    crd, schema = crds[kind]
    errors = []
    if manifest.get("apiVersion") != f"{crd['spec']['group']}/v1":
        errors.append(f"apiVersion {manifest.get('apiVersion')!r} is not {crd['spec']['group']}/v1")
    metadata = manifest.get("metadata") or {}
    errors += [f"metadata.{key}: not an ObjectMeta field" for key in set(metadata) - OBJECT_META_KEYS]
    if not DNS_LABEL.fullmatch(str(metadata.get("name", ""))):
        errors.append(f"metadata.name {metadata.get('name')!r} is not a DNS label")
    for error in jsonschema.Draft7Validator(schema).iter_errors(manifest):
        errors.append(f"{'.'.join(map(str, error.absolute_path))}: {error.message}")
    for field in unknown_fields(manifest["spec"], schema["properties"]["spec"], "spec"):
        errors.append(f"{field}: not in the {kind} v1 schema")
    return errors


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda path: path.name)
def test_kuberay_manifest_passes_the_v1_crd(path, crds):
    assert manifest_errors(load(path), crds) == []


def misspell_a_field(manifest):
    manifest["spec"]["headGroupSpec"]["rayStartParam"] = manifest["spec"]["headGroupSpec"].pop("rayStartParams")


def misplace_a_container_field(manifest):
    manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envs"] = []


def give_a_port_as_a_number(manifest):
    manifest["spec"]["headGroupSpec"]["rayStartParams"]["port"] = 6381


def drop_the_head_group(manifest):
    del manifest["spec"]["headGroupSpec"]


@pytest.mark.parametrize("break_it", [misspell_a_field, misplace_a_container_field, give_a_port_as_a_number,
                                      drop_the_head_group])
def test_crd_check_rejects_a_broken_raycluster(break_it, crds):
    manifest = load(RAYCLUSTER)
    break_it(manifest)
    assert manifest_errors(manifest, crds)


def test_crd_check_rejects_a_broken_rayjob(crds):
    manifest = load(RAYJOB)
    manifest["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["enviroment"] = []
    assert manifest_errors(manifest, crds)


def ray_containers(raycluster: dict) -> list[dict]:
    groups = [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]
    return [group["template"]["spec"]["containers"][0] for group in groups]


def test_rayjob_runs_a_real_segq_command_on_the_raycluster():
    import typer.main

    from cluster.cli import app

    raycluster, rayjob = load(RAYCLUSTER), load(RAYJOB)
    assert rayjob["spec"]["clusterSelector"] == {"ray.io/cluster": raycluster["metadata"]["name"]}
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:3] == ["segq", "submit", "sweep"] and "--wait" in words
    sweep = typer.main.get_command(app).commands["submit"].commands["sweep"]
    parsed = sweep.make_context("sweep", words[3:]).params  # raises on an option segq does not have
    head = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    mounts = [mount["mountPath"] for mount in head["volumeMounts"]]
    assert any(str(parsed["spec_file"]).startswith(mount + "/") for mount in mounts), "the spec must be on the head"


def test_gpu_workers_ask_kubernetes_for_gpus():
    for group in load(RAYCLUSTER)["spec"]["workerGroupSpecs"]:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1


# --- one image, one set of settings -----------------------------------------------------------

def flags(words: list[str]) -> dict[str, str]:
    return dict(word[2:].split("=", 1) for word in words if word.startswith("--") and "=" in word)


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


def compose_settings(compose: dict) -> dict[str, set]:
    services = compose["services"]
    ray = [services[name] for name in ("ray-head", "ray-worker", "aggregator")]
    head, worker = flags(services["ray-head"]["command"]), flags(services["ray-worker"]["command"])
    return {
        "image": {service["image"] for service in ray},
        "RAY_AUTH_MODE": {service["environment"].get("RAY_AUTH_MODE") for service in ray},
        "SEGQ_STORAGE": {service["environment"].get("SEGQ_STORAGE") for service in ray},
        "gcs_port": {head["port"], port_of(worker["address"])},
        "dashboard_port": {head["dashboard-port"]},
    }


def launcher_settings(config: dict) -> dict[str, set]:
    docker = config["docker"]
    env = dict(option.split("=", 2)[1:] for option in docker["run_options"] if option.startswith("--env="))
    head = flags(shlex.split(config["head_start_ray_commands"][-1].split(";")[-1]))
    worker = flags(shlex.split(config["worker_start_ray_commands"][-1].split(";")[-1]))
    return {
        "image": {docker[key] for key in ("image", "head_image", "worker_image") if key in docker},
        "RAY_AUTH_MODE": {env.get("RAY_AUTH_MODE")},
        "SEGQ_STORAGE": {env.get("SEGQ_STORAGE")},
        "gcs_port": {head["port"], port_of(worker["address"])},
        "dashboard_port": {head["dashboard-port"]},
    }


def env_value(container: dict, name: str) -> str | None:
    return next((item.get("value") for item in container.get("env", []) if item["name"] == name), None)


def kuberay_settings(raycluster: dict, rayjob: dict) -> dict[str, set]:
    containers = ray_containers(raycluster)
    submitter = rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]
    head_params = raycluster["spec"]["headGroupSpec"]["rayStartParams"]
    head_ports = {port["name"]: str(port["containerPort"]) for port in containers[0]["ports"]}
    return {
        "image": {container["image"] for container in containers + submitter},
        "RAY_AUTH_MODE": {env_value(container, "RAY_AUTH_MODE") for container in containers + submitter},
        "SEGQ_STORAGE": {env_value(container, "SEGQ_STORAGE") for container in containers},
        "gcs_port": {head_params["port"], head_ports["gcs-server"]},
        "dashboard_port": {head_params["dashboard-port"], head_ports["dashboard"]},
    }


def disagreements(compose: dict, launcher: dict, raycluster: dict, rayjob: dict) -> list[str]:
    files = {"docker-compose.yml": compose_settings(compose),
             "cluster/ray-cluster.yaml": launcher_settings(launcher),
             "cluster/kuberay/": kuberay_settings(raycluster, rayjob)}
    found = []
    for setting in SHARED_SETTINGS:
        seen = {name: settings[setting] for name, settings in files.items()}
        values = set().union(*seen.values())
        if len(values) != 1 or None in values:
            found.append(f"{setting}: " + "; ".join(f"{name} has {sorted(map(str, each))}"
                                                    for name, each in seen.items()))
    return found


def test_compose_launcher_and_kuberay_share_the_image_and_settings():
    assert disagreements(load(COMPOSE), load(LAUNCHER), load(RAYCLUSTER), load(RAYJOB)) == []


def test_the_image_is_the_one_the_dockerfile_header_builds():
    compose = load(COMPOSE)
    image = next(iter(compose_settings(compose)["image"]))
    variant = compose["services"]["ray-head"]["build"]["args"]["TORCH_VARIANT"]
    builds = [line for line in DOCKERFILE.read_text().splitlines() if f"-t {image} " in line]
    assert builds, f"the Dockerfile's header has no build command for {image}"
    assert all(f"TORCH_VARIANT={variant} " in line for line in builds)


def change_the_launcher_storage(docs):
    docs[1]["docker"]["run_options"] = ["--env=SEGQ_STORAGE=/mnt/other" if option.startswith("--env=SEGQ_STORAGE")
                                        else option for option in docs[1]["docker"]["run_options"]]


def change_one_worker_image(docs):
    docs[2]["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = "segq:latest"


def change_the_compose_gcs_port(docs):
    worker = docs[0]["services"]["ray-worker"]
    worker["command"] = ["--address=ray-head:6379" if word.startswith("--address=") else word
                         for word in worker["command"]]


def drop_the_auth_mode_on_a_worker(docs):
    container = docs[2]["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["env"] = [item for item in container["env"] if item["name"] != "RAY_AUTH_MODE"]


@pytest.mark.parametrize("break_it", [change_the_launcher_storage, change_one_worker_image, change_the_compose_gcs_port,
                                      drop_the_auth_mode_on_a_worker])
def test_agreement_check_notices_one_file_drifting(break_it):
    docs = [load(COMPOSE), load(LAUNCHER), load(RAYCLUSTER), load(RAYJOB)]
    break_it(docs)
    assert disagreements(*docs)


# --- no secret in any file --------------------------------------------------------------------

def is_reference(value: str) -> bool:
    return bool(REFERENCE.fullmatch(value))


def text_secrets(text: str) -> list[str]:
    """Credentials in Redis URLs, and long random-looking strings (tokens, keys), anywhere in a file."""
    def line_of(match: re.Match) -> int:
        return text.count("\n", 0, match.start()) + 1

    # The messages give the line only: a failing test must not print the secret it found.
    found = [f"line {line_of(match)}: a Redis URL with a written password"
             for match in re.finditer(r"rediss?://[^:@\s/'\"]*:([^@\s/'\"]+)@", text)
             if not is_reference(match.group(1))]
    found += [f"line {line_of(match)}: a token-like string"
              for match in re.finditer(r"(?<![\w-])[A-Fa-f0-9]{32,}(?![\w-])", text)]
    found += [f"line {line_of(match)}: a key-like string"
              for match in re.finditer(r"(?<![\w/.-])[A-Za-z0-9+/]{40,}={0,2}", text)]
    return found


def compose_secrets(compose: dict) -> list[str]:
    found = []
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and "://" not in str(value) and not is_reference(str(value)):
                found.append(f"{name}: {key} is written in the file")
        command = service.get("command") or []
        if "--requirepass" in command and not is_reference(command[command.index("--requirepass") + 1]):
            found.append(f"{name}: the Redis password is written in the file")
    return found


def launcher_secrets(config: dict) -> list[str]:
    strings = [option for key in ("run_options", "head_run_options", "worker_run_options")
               for option in config["docker"].get(key, [])]
    strings += [command for key, value in config.items() if key.endswith("_commands") for command in value]
    found = [f"{name}= is given a value: {text[:40]}" for text in strings
             for name, value in re.findall(r"(\w*(?:TOKEN|PASSWORD|SECRET)\w*)=([^\s'\";]+)", text)
             if not is_reference(value)]
    found += [f"file_mounts: {source} is not a file of the launching user" for source in config["file_mounts"].values()
              if not source.startswith("~/")]
    return found


def kuberay_secrets(manifest: dict) -> list[str]:
    spec = manifest["spec"]
    if manifest["kind"] == "RayCluster":
        containers = ray_containers(manifest)
    else:
        containers = spec["submitterPodTemplate"]["spec"]["containers"]
    return [f"{container['name']}: {item['name']} is not read from a Secret"
            for container in containers for item in container.get("env", [])
            if SECRET_NAME.search(item["name"])
            and ("value" in item or "secretKeyRef" not in item.get("valueFrom", {}))]


def secret_problems(compose: dict, launcher: dict, raycluster: dict, rayjob: dict,
                    texts: dict[str, str]) -> list[str]:
    found = compose_secrets(compose) + launcher_secrets(launcher)
    found += kuberay_secrets(raycluster) + kuberay_secrets(rayjob)
    found += [f"{name}: {problem}" for name, text in texts.items() for problem in text_secrets(text)]
    found += [f"Dockerfile: {line}" for line in texts["Dockerfile"].splitlines()
              if re.match(r"\s*(ENV|ARG)\b", line) and SECRET_NAME.search(line)]
    return found


def deployment_files() -> tuple[dict, dict, dict, dict, dict[str, str]]:
    paths = (COMPOSE, LAUNCHER, RAYCLUSTER, RAYJOB, DOCKERFILE)
    return (load(COMPOSE), load(LAUNCHER), load(RAYCLUSTER), load(RAYJOB),
            {path.name: path.read_text() for path in paths})


def test_no_secret_is_written_in_any_deployment_file():
    assert secret_problems(*deployment_files()) == []


def write_the_token_into_compose(files):
    files[0]["x-segq-env"]["RAY_AUTH_TOKEN"] = "not-a-reference"  # the services share this mapping


def write_the_token_into_the_launcher(files):
    files[1]["docker"]["run_options"].append("--env=RAY_AUTH_TOKEN=s3cr3t")


def write_the_redis_url_into_kuberay(files):
    container = files[2]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "SEGQ_REDIS_URL", "value": "redis://redis:6379/0"} if item["name"] == "SEGQ_REDIS_URL"
                        else item for item in container["env"]]


def write_a_password_into_a_comment(files):
    files[4]["rayjob.yaml"] += "\n# redis://:hunter2@redis:6379/0\n"


def write_a_generated_token_anywhere(files):
    files[4]["ray-cluster.yaml"] += "\n# " + "0123456789abcdef" * 2 + "\n"


@pytest.mark.parametrize("break_it", [write_the_token_into_compose, write_the_token_into_the_launcher,
                                      write_the_redis_url_into_kuberay, write_a_password_into_a_comment,
                                      write_a_generated_token_anywhere])
def test_secret_check_notices_a_written_secret(break_it):
    files = list(deployment_files())
    break_it(files)
    assert secret_problems(*files)
