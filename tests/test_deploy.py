"""Static checks of the production deployment (deploy/) and the /health endpoint.

Nothing is built or started: the images, the compose file and the Kubernetes manifests are read
and checked for what a deployment needs (see docs/operations.md). Each check prints its count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKER = DEPLOY / "docker"

# What every Gatehouse process needs in production, by the names gatehouse/settings.py reads.
# A secret may be given as NAME_FILE instead (gatehouse/env.py, env_secret).
REQUIRED_ENV = (
    "GATEHOUSE_ENV",
    "GATEHOUSE_VAR_DIR",
    "SECRET_KEY",
    "PSEUDONYM_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_PROXY_SSL_HEADER",
    "ARTIFACT_STORE_DIR",
    "INFERENCE_BACKEND",
    "TORCHSERVE_INFERENCE_URL",
    "TORCHSERVE_MANAGEMENT_URL",
    "TORCHSERVE_MODEL_STORE",
    "TORCHSERVE_KEY_FILE",
    "LOG_SIGNING_KEY",
    "LOG_SEQUENCER_EMBEDDED",
)
# Secrets that must come from files, never from a plain value in a manifest.
FILE_ONLY = ("SECRET_KEY", "PSEUDONYM_KEY", "DATABASE_URL", "REDIS_URL", "LOG_SIGNING_KEY")
# Read by other programs than Django's settings (uvicorn, the images' commands).
OTHER_ENV = {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "CELERY_QUEUES", "CELERY_CONCURRENCY"}
GATEHOUSE_COMPONENTS = ("web", "worker", "beat", "sequencer")
QUEUES = {"batch", "explanations", "maintenance"}
COMPONENT = "app.kubernetes.io/component"
SEQUENCER_CHECK = DOCKER / "sequencer_healthcheck.py"
WITNESS_DIR = "/var/lib/gatehouse/log-checkpoints"
ENV_CALL = re.compile(r"env_(str|int|bool|list|secret)\(\s*\"([A-Z0-9_]+)\"")


def _settings_env() -> tuple[set[str], set[str]]:
    """(every variable gatehouse/settings.py reads, those read with env_secret)."""
    found = ENV_CALL.findall((ROOT / "gatehouse" / "settings.py").read_text(encoding="utf-8"))
    return {name for _, name in found}, {name for kind, name in found if kind == "secret"}


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def _component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _dockerfile_targets() -> dict[str, Path]:
    targets: dict[str, Path] = {}
    for path in DOCKER.glob("*.Dockerfile"):
        for match in re.finditer(r"^FROM\s+\S+\s+AS\s+(\S+)", path.read_text(), re.M | re.I):
            targets[match.group(1)] = path
    return targets


def _configmap() -> dict[str, str]:
    (cm,) = [d for d in _k8s_docs() if d["kind"] == "ConfigMap"]
    return {k: str(v) for k, v in cm["data"].items()}


# --- YAML and Kubernetes structure --------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses():
    files = _yaml_files()
    docs = [d for p in files for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]
    print(f"\n{len(files)} YAML files, {len(docs)} documents parsed")
    assert len(files) >= 10


def test_every_kubernetes_object_has_api_version_kind_and_name():
    docs = _k8s_docs()
    for doc in docs:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc
    kinds = sorted({d["kind"] for d in docs})
    print(f"\n{len(docs)} Kubernetes objects: {', '.join(kinds)}")
    for kind in ("Deployment", "Service", "ConfigMap", "NetworkPolicy", "Job"):
        assert kind in kinds
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_every_container_has_image_resources_security_context_and_probes():
    checked = 0
    for doc in _k8s_docs():
        pod = _pod_spec(doc)
        if pod is None:
            continue
        pod_sc = pod.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, doc["metadata"]["name"]
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for container in pod["containers"]:
            name = f"{doc['metadata']['name']}/{container['name']}"
            assert container.get("image"), name
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
            assert "memory" in resources.get("limits", {}), name
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            if doc["kind"] == "Deployment":
                assert container.get("readinessProbe"), name
                assert container.get("livenessProbe"), name
            checked += 1
    print(f"\n{checked} containers checked")
    assert checked >= 7


def test_web_probes_use_health_with_an_allowed_host_and_web_scales_on_cpu():
    docs = _k8s_docs()
    allowed = _configmap()["ALLOWED_HOSTS"].split(",")
    (web,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "web"]
    (container,) = web["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"].startswith("/health")
        assert {h["name"]: h["value"] for h in get["httpHeaders"]}["Host"] in allowed
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == web["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    (pdb,) = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].get(COMPONENT) == "web"]
    assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]


def test_beat_is_a_single_replica_recreated_never_rolled():
    beats = [d for d in _k8s_docs() if d["kind"] == "Deployment" and _component(d) == "beat"]
    assert len(beats) == 1
    assert beats[0]["spec"]["replicas"] == 1
    assert beats[0]["spec"]["strategy"]["type"] == "Recreate"
    beat = _compose()["services"]["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert not any(d["kind"] == "HorizontalPodAutoscaler" and "beat" in str(d) for d in _k8s_docs())


def test_workers_consume_every_queue_group_and_the_default_queue():
    from django.conf import settings

    default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    routes = getattr(settings, "CELERY_TASK_ROUTES", None) or {}
    routed = {r["queue"] for r in routes.values() if isinstance(r, dict) and "queue" in r}
    workers = [d for d in _k8s_docs() if d["kind"] == "Deployment" and _component(d) == "worker"]
    consumed: set[str] = set()
    for worker in workers:
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        consumed |= set(env["CELERY_QUEUES"].split(","))
    print(
        f"\n{len(workers)} worker Deployments consume {sorted(consumed)}; routed: {sorted(routed)}"
    )
    assert len(workers) >= 3
    assert QUEUES | {default} | routed <= consumed
    compose_queues = set(
        _compose()["services"]["worker"]["environment"]["CELERY_QUEUES"].split(",")
    )
    assert QUEUES | {default} | routed <= compose_queues


# --- The decision log: sequencer, verification, key ---------------------------------------------


def _command_parser(name: str) -> Any:
    """The argument parser of ``manage.py <name>``, to check the flags a manifest passes (an
    unknown flag raises CommandError)."""
    from django.core.management import load_command_class

    return load_command_class("gatehouse", name).create_parser("manage.py", name)


def _is_false(value: str) -> bool:
    return value.strip().lower() in {"0", "false", "no", "off", ""}  # as gatehouse/env.py reads


def test_the_sequencer_runs_as_its_own_process_with_a_standby_and_web_embeds_none():
    compose = _compose()["services"]
    sequencer = compose["sequencer"]
    assert sequencer["command"] == ["python", "manage.py", "run_sequencer"]
    assert sequencer["image"].startswith("gatehouse/web:")
    assert sequencer["deploy"]["replicas"] == 2
    assert not sequencer.get("ports")
    assert f"log-checkpoints:{WITNESS_DIR}" in sequencer["volumes"]
    assert "/usr/local/bin/gatehouse-sequencer-check" in sequencer["healthcheck"]["test"]
    for name in (*GATEHOUSE_COMPONENTS, "migrate"):
        env, _ = _compose_env(name)
        assert _is_false(env["LOG_SEQUENCER_EMBEDDED"]), f"compose {name} embeds a sequencer"
        assert env["LOG_WITNESS_DIR"] == WITNESS_DIR
    _command_parser("run_sequencer").parse_args(sequencer["command"][3:])

    docs = _k8s_docs()
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and _component(d) == "sequencer"]
    # Two replicas, rolled: the lease in the database, not the strategy, keeps one active.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "gatehouse/web"
    assert container["command"] == ["python", "manage.py", "run_sequencer"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "/usr/local/bin/gatehouse-sequencer-check" in container[probe]["exec"]["command"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts[WITNESS_DIR].get("readOnly")
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[WITNESS_DIR]["name"]]["persistentVolumeClaim"]["claimName"]
    (pvc,) = [
        d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim
    ]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # both replicas, on any node
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    (pdb,) = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].get(COMPONENT) == "sequencer"]
    assert pdb["spec"]["minAvailable"] == 1
    assert not any(
        d["kind"] == "HorizontalPodAutoscaler"
        and d["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        for d in docs
    )
    cm = _configmap()
    assert _is_false(cm["LOG_SEQUENCER_EMBEDDED"])
    assert cm["LOG_WITNESS_DIR"] == WITNESS_DIR
    # No other pod runs a sequencer of its own.
    others = [
        c
        for d in docs
        if (p := _pod_spec(d)) and _component(d) != "sequencer"
        for c in p["containers"]
    ]
    assert not any("run_sequencer" in (c.get("command") or []) for c in others)
    print(f"\nsequencer: 2 compose replicas, 2 Kubernetes replicas, witness volume {claim}")


def test_the_signing_key_is_a_secret_file_in_every_gatehouse_process():
    declared = _compose()["secrets"]
    assert declared["log_signing_key"] == {"file": "./secrets/log_signing_key"}
    for name in (*GATEHOUSE_COMPONENTS, "migrate"):
        env, secrets = _compose_env(name)
        assert env["LOG_SIGNING_KEY_FILE"] in secrets, name
    cm = _configmap()
    assert cm["LOG_SIGNING_KEY_FILE"] == "/run/secrets/gatehouse/log_signing_key"
    for component in (*GATEHOUSE_COMPONENTS, "migrate", "log-verify"):
        for name, env, dirs in _k8s_env(component):
            assert str(Path(env["LOG_SIGNING_KEY_FILE"]).parent) in dirs, name
    # Production settings refuse to load without a key: the image build gives collectstatic a
    # throwaway one, as it does SECRET_KEY.
    dockerfile = (DOCKER / "gatehouse.Dockerfile").read_text()
    collect = dockerfile[dockerfile.index("RUN GATEHOUSE_VAR_DIR") :].split("\n\n")[0]
    assert "LOG_SIGNING_KEY=collectstatic-only-not-a-key" in collect
    assert not re.search(r"^ENV .*LOG_SIGNING_KEY", dockerfile, re.M)


def test_the_log_is_verified_hourly_against_the_kept_checkpoints():
    (job,) = [d for d in _k8s_docs() if d["kind"] == "CronJob" and _component(d) == "log-verify"]
    assert job["spec"]["schedule"].split()[1] == "*"  # every hour
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = container["command"][-1]
    calls = re.findall(r"python manage.py verify_decisions([^\n]*)", script)
    assert any("--checkpoint" in call for call in calls), script
    parser = _command_parser("verify_decisions")
    for call in calls:
        parser.parse_args(call.replace('"$dir/$newest"', "x").split())
    assert "set -e" in script  # a failed verification fails the Job before anything is pruned
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[WITNESS_DIR]]["persistentVolumeClaim"]["claimName"]
    (sequencer,) = [
        d for d in _k8s_docs() if d["kind"] == "Deployment" and _component(d) == "sequencer"
    ]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in sequencer["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claim in claims  # it reads what the sequencer writes
    assert int(container["resources"]["limits"]["memory"].removesuffix("Gi")) >= 4
    # The hash chain's head export is gone: no manifest may call it any more.
    with pytest.raises(CommandError, match="unrecognized arguments: --export-head"):
        parser.parse_args(["--export-head"])
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".md", ".example", ".Dockerfile"}:
            text = path.read_text(encoding="utf-8")
            assert "--export-head" not in text, path
            assert "chain-head" not in text, path
    print(f"\nlog-verify: {len(calls)} verify_decisions calls, witness volume {claim}")


def _sequencer_check() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sequencer_healthcheck", SEQUENCER_CHECK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db
def test_the_sequencer_health_check_reads_the_lease_and_the_queue():
    import time
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from gatehouse.tlog.models import LogLeaf, LogLease
    from gatehouse.tlog.sequencer import Sequencer

    check = _sequencer_check()
    assert LogLease._meta.db_table == check.LEASE_TABLE
    assert LogLeaf._meta.db_table == check.LEAF_TABLE
    assert check.problem(connection, max_wait_s=30) == "no sequencer holds the lease"
    assert check.main([]) == 1
    Sequencer().acquire()
    assert check.problem(connection, max_wait_s=30) == ""
    assert check.main(["--max-wait", "30"]) == 0
    LogLeaf.objects.filter(idx=None).delete()
    LogLeaf.objects.create(
        kind="test",
        ref="late",
        leaf_hash=b"\x00" * 32,
        created_at=timezone.now() - timedelta(seconds=60),
    )
    assert "waited more than 30 s" in check.problem(connection, max_wait_s=30)
    assert check.problem(connection, max_wait_s=300) == ""
    later = time.time() + 3600  # the lease has run out by then
    assert check.problem(connection, max_wait_s=86400, now=later) == "no sequencer holds the lease"
    dockerfile = (DOCKER / "gatehouse.Dockerfile").read_text()
    assert "sequencer_healthcheck.py /usr/local/bin/gatehouse-sequencer-check" in dockerfile
    assert WITNESS_DIR in dockerfile  # created for uid 10001, so a named volume inherits it
    ignore = (DOCKER / "gatehouse.Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/docker/sequencer_healthcheck.py" in ignore


# --- GPU and TorchServe --------------------------------------------------------------------------


def test_torchserve_runs_on_gpu_nodes_and_requests_a_gpu():
    (ts,) = [d for d in _k8s_docs() if d["kind"] == "Deployment" and _component(d) == "torchserve"]
    pod = ts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert int(container["resources"]["requests"]["nvidia.com/gpu"]) >= 1
    assert (
        container["resources"]["limits"]["nvidia.com/gpu"]
        == container["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert ts["spec"]["replicas"] == 1
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/srv/gatehouse/model_store"].get("readOnly") is True
    compose_ts = _compose()["services"]["torchserve"]
    assert compose_ts["profiles"] == ["gpu"]
    (device,) = compose_ts["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert compose_ts["networks"] == ["backend"]


def test_only_web_and_worker_pods_reach_torchserve_inference_and_management_ports():
    policies = [d for d in _k8s_docs() if d["kind"] == "NetworkPolicy"]
    assert any(
        p["spec"]["podSelector"] == {}
        and "Ingress" in p["spec"]["policyTypes"]
        and not p["spec"].get("ingress")
        for p in policies
    ), "no default deny"
    (ts,) = [
        p
        for p in policies
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        == "torchserve"
    ]
    api_rules = [r for r in ts["spec"]["ingress"] if {p["port"] for p in r["ports"]} & {8080, 8081}]
    assert len(api_rules) == 1
    (rule,) = api_rules
    assert {p["port"] for p in rule["ports"]} == {8080, 8081}
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}
    (expr,) = source["podSelector"]["matchExpressions"]
    assert expr["key"] == "app.kubernetes.io/component"
    assert set(expr["values"]) == {"web", "worker"}
    (web,) = [
        p
        for p in policies
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        == "web"
    ]
    assert {p["port"] for r in web["spec"]["ingress"] for p in r["ports"]} == {8000}
    print(f"\n{len(policies)} NetworkPolicies")


def test_the_container_torchserve_config_keeps_the_security_settings():
    def props(path: Path) -> dict[str, str]:
        lines = path.read_text().splitlines()
        pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
        return {k.strip(): v.strip() for k, v in pairs}

    host = props(DEPLOY / "torchserve" / "config.gpu.properties")
    container = props(DOCKER / "torchserve" / "config.properties")
    keys = (
        "model_store",
        "allowed_urls",
        "install_py_dep_per_model",
        "enable_envvars_config",
        "disable_token_authorization",
        "enable_model_api",
        "max_request_size",
        "metrics_mode",
        "grpc_inference_address",
        "grpc_management_address",
    )
    for key in keys:
        assert container[key] == host[key], key
    assert container["disable_token_authorization"] == "false"
    volumes = _compose()["services"]["torchserve"]["volumes"]
    assert f"model-store:{container['model_store']}:ro" in volumes


# --- Images ---------------------------------------------------------------------------------------


def _is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.search(r"\d", tag))


def test_every_image_is_built_here_or_a_pinned_public_image():
    targets = _dockerfile_targets()
    images = [c["image"] for d in _k8s_docs() if (pod := _pod_spec(d)) for c in pod["containers"]]
    images += [s["image"] for s in _compose()["services"].values()]
    for image in images:
        if image.startswith("gatehouse/"):
            target = image.split("/", 1)[1].split(":", 1)[0]
            assert target in targets, f"{image}: no Dockerfile target {target!r}"
        else:
            assert _is_pinned(image), image
    for path in DOCKER.glob("*.Dockerfile"):
        text = path.read_text()
        for base in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, re.M):
            assert _is_pinned(base), f"{path.name}: {base}"
        assert re.search(r"^USER 10001", text, re.M), f"{path.name} runs as root"
        assert "HEALTHCHECK" in text
        assert not re.search(r"^ENV .*(SECRET_KEY|PSEUDONYM_KEY|PASSWORD|TOKEN)\w*=", text, re.M)
    web = (DOCKER / "gatehouse.Dockerfile").read_text()
    assert "torch==${TORCH_VERSION}" in web
    assert "ARG TORCH_VERSION=2.13.0+cpu" in web
    gpu = (DOCKER / "torchserve-gpu.Dockerfile").read_text()
    assert "torchserve==0.12.0" in gpu
    assert "openjdk-17" in gpu
    print(f"\n{len(images)} image references, {len(targets)} Dockerfile targets")


# --- Environment ----------------------------------------------------------------------------------


def _compose_env(service: str) -> tuple[dict[str, str], set[str]]:
    spec = _compose()["services"][service]
    secrets = {f"/run/secrets/{s}" for s in spec.get("secrets", [])}
    return {k: str(v) for k, v in spec["environment"].items()}, secrets


def _k8s_env(component: str) -> list[tuple[str, dict[str, str], set[str]]]:
    found = []
    cm = _configmap()
    for doc in _k8s_docs():
        pod = _pod_spec(doc)
        if pod is None or _component(doc) != component:
            continue
        secret_volumes = {v["name"] for v in pod["volumes"] if "secret" in v}
        for container in pod["containers"]:
            env = {}
            if {"configMapRef": {"name": "gatehouse-config"}} in container.get("envFrom", []):
                env.update(cm)
            env.update({e["name"]: str(e["value"]) for e in container.get("env", [])})
            dirs = {
                m["mountPath"] for m in container["volumeMounts"] if m["name"] in secret_volumes
            }
            found.append((doc["metadata"]["name"], env, dirs))
    return found


def _check_env(where: str, env: dict[str, str], provided: Any) -> None:
    names, secret_names = _settings_env()
    for name in REQUIRED_ENV:
        assert name in names, f"{name} is not read by gatehouse/settings.py"
        file_var = f"{name}_FILE"
        if name in FILE_ONLY:
            assert name not in env, f"{where}: {name} must be a file"
            assert file_var in env, f"{where}: {name} must be a file"
        assert name in env or (name in secret_names and file_var in env), f"{where}: no {name}"
        if file_var in env:
            assert provided(env[file_var]), f"{where}: {file_var} points at no mounted secret"
    for name in env:
        base = name.removesuffix("_FILE")
        known = (
            name in names or name in OTHER_ENV or (name.endswith("_FILE") and base in secret_names)
        )
        assert known, f"{where}: {name} is read by nothing"


def test_compose_gives_web_worker_and_beat_every_required_setting():
    for service in (*GATEHOUSE_COMPONENTS, "migrate"):
        env, secrets = _compose_env(service)
        _check_env(f"compose {service}", env, lambda path, s=secrets: path in s)
    declared = _compose()["secrets"]
    for service in _compose()["services"].values():
        assert set(service.get("secrets", [])) <= set(declared)
    services = len(GATEHOUSE_COMPONENTS) + 1
    print(f"\n{len(REQUIRED_ENV)} required settings x {services} compose services")


def test_kubernetes_gives_web_worker_and_beat_every_required_setting():
    checked = 0
    for component in (*GATEHOUSE_COMPONENTS, "migrate", "log-verify"):
        containers = _k8s_env(component)
        assert containers, component
        for name, env, dirs in containers:
            _check_env(f"k8s {name}", env, lambda p, d=dirs: str(Path(p).parent) in d)
            checked += 1
    print(f"\n{len(REQUIRED_ENV)} required settings x {checked} Kubernetes containers")


def test_compose_exposes_only_web_and_every_long_running_service_restarts_and_is_checked():
    services = _compose()["services"]
    assert [name for name, s in services.items() if s.get("ports")] == ["web"]
    assert all(not s.get("expose") for s in services.values())
    for name, spec in services.items():
        if name == "migrate":
            continue
        assert spec.get("restart") in {"unless-stopped", "always"}, name
        assert spec.get("healthcheck", {}).get("test"), name
    assert _compose()["networks"]["backend"]["internal"] is True


def test_the_manifests_build_with_kustomize():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert all(
        d["metadata"].get("namespace") == "gatehouse" for d in built if d["kind"] != "Namespace"
    )
    print(f"\nkustomize built {len(built)} objects")


# --- /health ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_reports_each_component_and_no_details(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"database", "cache", "broker", "inference", "decision_log"}
    assert set(body["checks"].values()) == {"ok"}
    text = response.content.decode()
    for leak in ("version", "127.0.0.1", "sqlite", "redis", "torchserve", "http"):
        assert leak not in text.lower()


@pytest.mark.django_db
def test_health_is_503_when_the_broker_is_down(client, monkeypatch):
    from gatehouse import views

    def down() -> str:
        raise ConnectionRefusedError("redis://user:secret@10.0.0.5:6379 refused")

    monkeypatch.setattr(views, "_broker_status", down)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "checks": {
            "database": "ok",
            "cache": "ok",
            "broker": "error",
            "inference": "ok",
            "decision_log": "ok",
        },
    }
    assert b"secret" not in response.content


@pytest.mark.django_db
def test_a_down_optional_component_degrades_and_a_required_one_fails(client, monkeypatch):
    from gatehouse import extensions

    monkeypatch.setattr(
        extensions.registry, "health_checks", dict(extensions.registry.health_checks)
    )
    extensions.register_health_check(extensions.HealthCheck("inference", lambda: "down"))
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["inference"] == "down"

    def broken() -> str:
        raise RuntimeError("boom")

    extensions.register_health_check(extensions.HealthCheck("store", broken, required=True))
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["store"] == "down"


def test_the_liveness_probe_touches_no_dependency(client, monkeypatch):
    from gatehouse import views

    def fail() -> str:
        raise AssertionError("liveness must not call the broker")

    monkeypatch.setattr(views, "_broker_status", fail)
    response = client.get("/health?probe=live")  # no django_db mark: a query would fail
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_broker_check_gives_up_quickly_on_an_unreachable_broker(settings, monkeypatch):
    import time

    from gatehouse import views
    from gatehouse.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")
    app.__dict__.pop("pool", None)
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017, PT011 (any transport error)
        views._broker_status()
    assert time.monotonic() - started < 3 * views.HEALTH_BROKER_TIMEOUT_S
