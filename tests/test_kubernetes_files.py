"""deploy/kubernetes/, checked without a cluster: every manifest validates against the
Kubernetes API's schemas (kubernetes-validate ships them, so this runs offline), the GPU
overlay's patch is applied as kustomize applies it (and compared with `kubectl kustomize`
where kubectl is installed), every command is a real `lrsearch` command, every LRSEARCH_
variable a real setting with a valid value, the probes and the autoscaler's metric exist in
the real app, and `lrsearch migrate`, which each API pod runs, is safe to run concurrently."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from service import migrations
from service.config import Settings
from service.db import make_engine
from service.jobs.models import JOB_STATES
from service.main import create_app
from service.origin import host_allowed
from tests.processes import LRSEARCH
from tests.test_deploy_files import parse_command

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
BASE, GPU = K8S / "base", K8S / "overlays" / "gpu"
# The Kubernetes releases whose API schemas the manifests must satisfy: the newest that
# kubernetes-validate ships and the oldest minor release still maintained beside it.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
IMAGE = "lrsearch"  # the image name kustomize's `images:` rewrites (docker-compose.yml's)
SECRET, CONFIG = "lrsearch", "lrsearch-config"
ROLES = {"lrsearch-api": {"migrate": "migrate", "api": "api"},
         "lrsearch-worker": {"worker": "worker"}, "lrsearch-reaper": {"reaper": "reaper"}}
KUBECTL = shutil.which("kubectl")

Doc = dict[str, Any]


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(folder: Path) -> Doc:
    data: Doc = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return data


def base_docs() -> list[Doc]:
    return [doc for name in kustomization(BASE)["resources"] for doc in load_all(BASE / name)]


def by_name(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def strategic_merge(target: Any, patch: Any) -> Any:
    """`patch` merged into `target` as kustomize's strategic merge does for the fields the
    overlay patches: maps merge key by key; lists of named items (containers, env, whose
    Kubernetes merge key is `name`) merge item by item, the patch's items first (kustomize's
    order); any other list (tolerations, which has no merge key) is replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = strategic_merge(target[key], value) if key in target else value
        return merged
    named = all(isinstance(i, dict) and "name" in i for i in [*target, *patch]) \
        if isinstance(target, list) and isinstance(patch, list) else False
    if named:
        old = {item["name"]: item for item in target}
        patched = [strategic_merge(old[i["name"]], i) if i["name"] in old else i for i in patch]
        return [*patched, *(i for i in target if i["name"] not in {p["name"] for p in patch})]
    return copy.deepcopy(patch)


def set_images(docs: list[Doc], images: list[Doc]) -> list[Doc]:
    """kustomize's `images:` transformer: a new name or tag for every container of that
    image."""
    docs = copy.deepcopy(docs)
    for rule in images:
        for spec in pod_specs(docs):
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                name, _, tag = c["image"].partition(":")
                if name == rule["name"]:
                    c["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    return docs


def gpu_docs() -> list[Doc]:
    """The GPU overlay rendered: the base, its images rule, its patch of the worker."""
    overlay = kustomization(GPU)
    assert overlay["resources"] == ["../../base"]
    docs = set_images(base_docs(), kustomization(BASE).get("images", []))
    docs = set_images(docs, overlay["images"])
    for entry in overlay["patches"]:
        patch = yaml.safe_load((GPU / entry["path"]).read_text())
        target = entry["target"]
        assert (patch["kind"], patch["metadata"]["name"]) == (target["kind"], target["name"])
        docs = [strategic_merge(d, {k: v for k, v in patch.items() if k != "metadata"})
                if (d["kind"], d["metadata"]["name"]) == (target["kind"], target["name"])
                else d for d in docs]
    return docs


def pod_specs(docs: list[Doc]) -> list[Doc]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]


def containers(deployment: Doc) -> dict[str, Doc]:
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def environment(container: Doc, docs: list[Doc]) -> dict[str, str]:
    """The LRSEARCH_ variables a container gets: its ConfigMaps' data, then its own env (which
    wins); a value from the Secret is the example Secret's placeholder."""
    secret = load_all(K8S / "secret.example.yaml")[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(by_name(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret["metadata"]["name"] == SECRET, ref
            assert ref["key"] in secret["stringData"], ref  # the key the README creates
            env[item["name"]] = secret["stringData"][ref["key"]]
        else:
            env[item["name"]] = item["value"]
    return env


def kubectl_kustomize(folder: Path) -> list[Doc]:
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d is not None]


# --- the API's schemas ----------------------------------------------------------------------

def test_the_base_lists_every_manifest_in_its_folder() -> None:
    listed = set(kustomization(BASE)["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base_docs())
    assert kinds == sorted([
        ("ConfigMap", CONFIG), ("PersistentVolumeClaim", "lrsearch-data"),
        ("Deployment", "lrsearch-api"), ("Service", "lrsearch-api"),
        ("Deployment", "lrsearch-worker"), ("HorizontalPodAutoscaler", "lrsearch-worker"),
        ("Deployment", "lrsearch-reaper")])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    docs = [*base_docs(), *load_all(K8S / "secret.example.yaml"),
            by_name(gpu_docs(), "Deployment", "lrsearch-worker")]
    for doc in docs:
        # strict: a misspelt or misplaced field is an error, not silently ignored
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_wrong_field_would_be_caught() -> None:
    worker = copy.deepcopy(by_name(base_docs(), "Deployment", "lrsearch-worker"))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 90
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSIONS[-1], strict=True)
    worker = copy.deepcopy(by_name(base_docs(), "Deployment", "lrsearch-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not "
                    "installed: the overlay is checked with the patch applied here only")
def test_kustomize_renders_what_the_tests_check() -> None:
    """`kubectl kustomize` renders the base and the overlay to exactly the documents the
    other tests check, and they validate."""
    def key(d: Doc) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    base = set_images(base_docs(), kustomization(BASE).get("images", []))
    for folder, ours in ((BASE, base), (GPU, gpu_docs())):
        rendered = kubectl_kustomize(folder)
        assert sorted(rendered, key=key) == sorted(ours, key=key), folder
        for doc in rendered:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


# --- commands and settings ------------------------------------------------------------------

@pytest.mark.parametrize("docs", [base_docs, gpu_docs], ids=["base", "gpu"])
def test_every_container_runs_a_real_command(docs: Any) -> None:
    rendered = docs()
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    assert set(deployments) == set(ROLES)
    for name, roles in ROLES.items():
        found = containers(deployments[name])
        assert set(found) == set(roles), name
        for container_name, command in roles.items():
            c = found[container_name]
            assert "command" not in c  # the image's ENTRYPOINT, `lrsearch`, stays
            assert c["image"].partition(":")[0] == IMAGE
            assert parse_command(c["args"]).command.name == command
    api = containers(deployments["lrsearch-api"])["api"]
    ctx = parse_command(api["args"])
    assert ctx.params["host"] == "0.0.0.0" and not ctx.params["insecure"]
    assert [p["containerPort"] for p in api["ports"]] == [ctx.params["port"]]


def test_migrations_run_before_the_api_and_nowhere_else() -> None:
    api = by_name(base_docs(), "Deployment", "lrsearch-api")["spec"]["template"]["spec"]
    assert [c["name"] for c in api["initContainers"]] == ["migrate"]
    for name in ("lrsearch-worker", "lrsearch-reaper"):
        spec = by_name(base_docs(), "Deployment", name)["spec"]["template"]["spec"]
        assert "initContainers" not in spec  # workers wait for the schema themselves


@pytest.mark.parametrize("docs", [base_docs, gpu_docs], ids=["base", "gpu"])
def test_every_variable_is_a_real_setting_with_a_valid_value(
        docs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = docs()
    fields = set(Settings.model_fields)
    for deployment in (d for d in rendered if d["kind"] == "Deployment"):
        for name, container in containers(deployment).items():
            env = environment(container, rendered)
            for key in env:
                assert key.startswith("LRSEARCH_"), (name, key)
                assert key.removeprefix("LRSEARCH_").lower() in fields, (name, key)
            assert env["LRSEARCH_DATABASE_URL"].startswith("postgresql+psycopg://"), name
            assert env["LRSEARCH_DATA_DIR"] == "/data"
            with monkeypatch.context() as m:
                for key, value in env.items():
                    m.setenv(key, value)
                Settings()  # raises on a value the setting refuses
    api = environment(containers(by_name(rendered, "Deployment", "lrsearch-api"))["api"],
                      rendered)
    assert "LRSEARCH_METRICS_TOKEN" in api
    monkeypatch.setenv("LRSEARCH_ALLOWED_HOSTS", api["LRSEARCH_ALLOWED_HOSTS"])
    hosts = Settings().allowed_hosts
    # The names in-cluster clients use for the Service, and a port-forward's.
    for host in ("lrsearch-api", "lrsearch-api.default.svc",
                 "lrsearch-api.ml.svc.cluster.local", "localhost"):
        assert host_allowed(host, hosts), host
    assert not host_allowed("attacker.example.com", hosts)


def test_data_volume_is_shared_by_every_pod_that_reads_it() -> None:
    docs = base_docs()
    pvc = by_name(docs, "PersistentVolumeClaim", "lrsearch-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes
    for name in ROLES:
        spec = by_name(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {
            "claimName": "lrsearch-data"}}]
        main = spec["containers"][0]
        assert main["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
        # The image's user `lrsearch` (Dockerfile USER) by number, writing the volume.
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]


# --- the worker: shutdown, accelerators, autoscaling ----------------------------------------

def grace(docs: list[Doc]) -> tuple[float, float]:
    """(LRSEARCH_GRACE_SECONDS of the worker, its pod's terminationGracePeriodSeconds)."""
    worker = by_name(docs, "Deployment", "lrsearch-worker")
    env = environment(containers(worker)["worker"], docs)
    return (float(env["LRSEARCH_GRACE_SECONDS"]),
            float(worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]))


def test_kubernetes_waits_longer_than_the_workers_grace() -> None:
    for docs in (base_docs(), gpu_docs()):
        worker_grace, pod_grace = grace(docs)
        # SIGKILL only once the running job has had its grace and been handed back.
        assert pod_grace >= worker_grace + 10
    patch = yaml.safe_load((GPU / "worker-gpu.yaml").read_text())
    patched = patch["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in patched["containers"][0]["env"]}
    assert (float(env["LRSEARCH_GRACE_SECONDS"]), float(
        patched["terminationGracePeriodSeconds"])) == grace(gpu_docs())  # set as a pair


def test_the_gpu_overlay_gives_each_worker_one_gpu_and_nothing_else_one() -> None:
    docs = gpu_docs()
    worker = containers(by_name(docs, "Deployment", "lrsearch-worker"))["worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["limits"]["memory"] == "8Gi"  # the base's limits are kept
    assert worker["image"] == "lrsearch:gpu"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        by_name(docs, "Deployment", "lrsearch-worker")["spec"]["template"]["spec"][
            "tolerations"]
    assert parse_command(worker["args"]).params["gpu"] is None  # the device plugin picks it
    others = [(d, "gpu") for d in docs if d["metadata"]["name"] != "lrsearch-worker"]
    for d, where in [*((d, "base") for d in base_docs()), *others]:
        if d["kind"] == "Deployment":
            for c in containers(d).values():
                assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), \
                    (where, d["metadata"]["name"], c["name"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_autoscalers_metric_is_the_apps_queue_gauge(client: TestClient) -> None:
    docs = base_docs()
    hpa = by_name(docs, "HorizontalPodAutoscaler", "lrsearch-worker")["spec"]
    worker = by_name(docs, "Deployment", "lrsearch-worker")
    assert hpa["scaleTargetRef"] == {"apiVersion": worker["apiVersion"], "kind": "Deployment",
                                     "name": worker["metadata"]["name"]}
    assert "replicas" not in worker["spec"]  # the autoscaler owns it
    [metric] = hpa["metrics"]
    assert metric["type"] == "External"
    name = metric["external"]["metric"]["name"]
    [expression] = metric["external"]["metric"]["selector"]["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("state", "In")
    assert set(expression["values"]) == {"queued", "running"} <= set(JOB_STATES)

    # The real app's /metrics exports that gauge with those label values, from a pod's IP.
    r = client.get("/metrics", headers={"host": "10.1.2.3:8000"})
    assert r.status_code == 200, r.text
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families[name].type == "gauge"
    states = {s.labels["state"] for s in families[name].samples}
    assert set(expression["values"]) <= states

    # The adapter serves it under that name, and the scrape job reaches the API pods.
    [rule] = yaml.safe_load((K8S / "prometheus" / "adapter-values.yaml").read_text())[
        "rules"]["external"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
    [job] = yaml.safe_load((K8S / "prometheus" / "scrape-config.yaml").read_text())
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
    labels = by_name(docs, "Deployment", "lrsearch-api")["spec"]["template"]["metadata"][
        "labels"]
    keep = job["relabel_configs"][0]
    assert keep["regex"] == ";".join(labels[k] for k in (
        "app.kubernetes.io/name", "app.kubernetes.io/component"))


# --- the API: probes and Service -------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_probes_reach_real_routes_that_answer_a_pods_ip(client: TestClient) -> None:
    docs = base_docs()
    deployment = by_name(docs, "Deployment", "lrsearch-api")
    api = containers(deployment)["api"]
    routes = {getattr(r, "path", None) for r in create_app(Settings()).routes}
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    for probe, expected in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = api[probe]["httpGet"]
        assert get["path"] == expected and get["path"] in routes
        assert get["port"] in ports
        # The kubelet sends the pod's IP as Host; a migrated database is ready.
        assert client.get(get["path"], headers={"host": "10.1.2.3:8000"}).status_code == 200
    service = by_name(docs, "Service", "lrsearch-api")["spec"]
    assert service["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert [p["targetPort"] for p in service["ports"]] == list(ports)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readiness_fails_while_the_schema_is_not_the_codes(
        client: TestClient, engine: Engine) -> None:
    """What takes an old API pod out of the Service once a newer release has migrated."""
    with engine.begin() as c:
        c.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0011'")
    r = client.get("/readyz")
    assert r.status_code == 503 and "lrsearch migrate" in r.text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_api_pods_starting_together_migrate_safely(database_url: str) -> None:
    """Each API pod's init container runs `lrsearch migrate`; pods that start at once run it
    concurrently on one fresh database, and every run succeeds."""
    env = {**os.environ, "LRSEARCH_DATABASE_URL": database_url}
    procs = [subprocess.Popen([LRSEARCH, "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(3)]
    outputs = [p.communicate(timeout=180)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n---\n".join(outputs)
    engine = make_engine(database_url)
    try:
        assert migrations.current(engine) == migrations.head()
    finally:
        engine.dispose()
