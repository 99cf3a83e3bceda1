"""The Kubernetes manifests of the repository's example, validated against the Kubernetes OpenAPI
schemas (strict, oldest and newest minor ``kubernetes-validate`` ships) and the rules those miss."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.errors import SpecError, TargetError
from pipeline.server.config import ServerConfig
from pipeline.spec.loader import load
from pipeline.spec.model import ResourceAmounts, ScaleSettings, Spec, settings_digest
from pipeline.targets.base import DeployRequest, ResolvedModel
from pipeline.targets.kubernetes import manifests
from pipeline.targets.kubernetes.manifests import label_value, object_name, render

kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[3]
IMAGE = "registry.example.com/ml/mlops-env-sklearn@sha256:" + "a" * 64
ROUTER_IMAGE = "registry.example.com/ml/mlops-env-sklearn@sha256:" + "b" * 64
SECRET = "s3cr3t-Value-9f8e7d"
KEYS = {"primary": "primary-key-0123456789abcdef", "secondary": "secondary-key-fedcba9876543210"}
SPEC_DIGEST, COMMIT = "sha256:" + "c" * 64, "d" * 40
VERSIONS = sorted({v for v in kubernetes_validate.utils.all_versions()},
                  key=lambda v: tuple(int(p) for p in v.split(".")))
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def example(tmp_path: Path, routing: str = "router") -> Spec:
    """The repository's mlops.yaml on a kubernetes target, with a second deployment that uses the new fields."""
    for folder in ("models", "environments"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    data = yaml.safe_load((REPO / "mlops.yaml").read_text())
    data["targets"] = {"cluster": {"type": "kubernetes", "namespace": "ml", "routing": routing,
                                   "image_repository": "registry.example.com/ml"}}
    if routing == "gateway":
        data["targets"]["cluster"]["gateway"] = {"name": "public", "namespace": "gateways"}
    endpoint = data["endpoints"]["iris"]
    endpoint.update(target="cluster", traffic={"blue": 90, "green": 10}, mirror_traffic={"shadow": 20})
    blue = endpoint["deployments"]["blue"]
    blue.update(instance_count=3, resources={"cpu": 0.5, "memory": "512m"},
                data_collector={"enabled": True, "sampling_rate": 1.0, "rolling_rate": "hour"},
                environment_variables={"LOG_FORMAT": "json", "DB_PASSWORD": "${DB_PASSWORD}"},
                readiness_probe={"initial_delay": 0.5, "period": 2.5, "timeout": 0.2})
    endpoint["deployments"]["green"] = {
        "model": "iris-classifier", "environment": "sklearn",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
        "scale_settings": {"type": "target_utilization", "min_instances": 2, "max_instances": 6,
                           "target_utilization_percentage": 60}}
    endpoint["deployments"]["shadow"] = {"model": "iris-classifier", "environment": "sklearn"}
    (tmp_path / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load(tmp_path / "mlops.yaml")


def requests(spec: Spec, secrets: bool = True) -> list[DeployRequest]:
    found = []
    for endpoint in spec.endpoints.values():
        for deployment in endpoint.deployments.values():
            model = ResolvedModel(deployment.model.name, 3, "sha256:" + "e" * 64, "sklearn",
                                  Path(manifests.MODEL_DIR))
            found.append(DeployRequest(endpoint, deployment, model, image=IMAGE, baseline="baseline.csv",
                                       environment_variables={"DB_PASSWORD": SECRET} if secrets else {},
                                       settings_digest=settings_digest(endpoint, deployment)))
    return found


def rendered(spec: Spec, secrets: bool = True) -> list[dict]:
    return render(spec, "cluster", requests(spec, secrets), spec_digest=SPEC_DIGEST, commit=COMMIT,
                  keys={"iris": KEYS} if secrets else None, router_image=ROUTER_IMAGE)


@pytest.fixture(params=["router", "gateway"])
def objects(request, tmp_path: Path) -> list[dict]:
    return rendered(example(tmp_path, request.param))


def kinds(objects: list[dict]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def pod_specs(objects: list[dict]) -> list[tuple[dict, dict]]:
    return [(o, o["spec"]["template"]) for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


# -- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [VERSIONS[0], VERSIONS[-1]])
def test_every_object_is_valid_for_the_oldest_and_newest_kubernetes(objects: list[dict], version: str):
    for item in objects:
        if item["kind"] == "HTTPRoute":
            continue  # a CRD: checked structurally below
        kubernetes_validate.validate(item, version, strict=True)


def test_httproute_has_the_gateway_api_shape(tmp_path: Path):
    route = next(o for o in rendered(example(tmp_path, "gateway")) if o["kind"] == "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert set(route) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(route["spec"]) == {"parentRefs", "rules"}
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "public", "namespace": "gateways"}]
    rules = route["spec"]["rules"]
    assert 1 <= len(rules) <= 16  # the CRD's maxItems
    services = {o["metadata"]["name"]: o for o in rendered(example(tmp_path / "again", "gateway"))
                if o["kind"] == "Service"}
    for rule in rules:
        assert set(rule) <= {"matches", "filters", "backendRefs"}
        assert 1 <= len(rule["matches"]) <= 64
        for match in rule["matches"]:
            assert set(match) <= {"path", "headers"}
            for header in match.get("headers", []):
                assert header["type"] == "Exact" and re.match(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$", header["name"])
        for ref in rule["backendRefs"]:
            assert set(ref) <= {"name", "port", "weight"}
            assert ref["name"] in services and ref["port"] == manifests.PORT
            assert 0 <= ref.get("weight", 1) <= 1_000_000
        for item in rule.get("filters", []):
            assert item["type"] == "RequestMirror" and set(item) == {"type", "requestMirror"}
            assert set(item["requestMirror"]) == {"backendRef", "percent"}
            assert 0 <= item["requestMirror"]["percent"] <= 100
            assert item["requestMirror"]["backendRef"]["name"] in services
    live = rules[-1]
    assert {r["name"]: r["weight"] for r in live["backendRefs"]} == {"iris-blue": 90, "iris-green": 10}
    assert live["filters"][0]["requestMirror"] == {"backendRef": {"name": "iris-shadow", "port": 8080},
                                                   "percent": 20}
    assert [r["backendRefs"][0]["name"] for r in rules[:-1]] == ["iris-blue", "iris-green", "iris-shadow"]


# -- what the schemas miss ----------------------------------------------------------------------


def test_names_are_dns_labels_and_unique(objects: list[dict]):
    names = kinds(objects)
    assert len(names) == len(set(names))
    for _, name in names:
        assert DNS_1123_LABEL.match(name) and len(name) <= 63, name
        assert name[0].isalpha(), name  # Services need DNS-1035 labels


def test_labels_and_annotations(objects: list[dict]):
    for item in objects:
        labels = item["metadata"]["labels"]
        for key in ("name", "instance", "version", "component"):
            assert labels[f"app.kubernetes.io/{key}"]
        assert labels["app.kubernetes.io/managed-by"] == "mlops"
        assert labels["mlops.dev/project"] and labels["mlops.dev/endpoint"] == "iris"
        for value in labels.values():
            assert len(value) <= 63 and LABEL_VALUE.match(value), value
        assert item["metadata"]["annotations"]["mlops.dev/spec-digest"] == SPEC_DIGEST
        assert item["metadata"]["annotations"]["mlops.dev/git-commit"] == COMMIT
        assert item["metadata"]["namespace"] == "ml"
    scoring = [o for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "scoring"]
    assert scoring and all(o["metadata"]["labels"]["mlops.dev/model"] == "iris-classifier"
                           and o["metadata"]["labels"]["mlops.dev/version"] == "3" for o in scoring)


def test_selectors_pick_their_own_pods_only(objects: list[dict]):
    workloads = pod_specs(objects)
    templates = [t["metadata"]["labels"] for _, t in workloads]
    for workload, template in workloads:
        selected = workload["spec"]["selector"]["matchLabels"]
        assert selected.items() <= template["metadata"]["labels"].items()
        assert sum(selected.items() <= labels.items() for labels in templates) == 1  # no overlap
        assert "app.kubernetes.io/version" not in selected  # an update rolls the same workload
    for item in objects:
        match = (item["spec"].get("selector") if item["kind"] == "Service"
                 else item["spec"]["selector"]["matchLabels"] if item["kind"] == "PodDisruptionBudget" else None)
        if match:
            assert any(match.items() <= labels.items() for labels in templates), item["metadata"]["name"]


def test_containers_are_pinned_hardened_and_probed_on_their_ports(objects: list[dict]):
    for workload, template in pod_specs(objects):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert DIGEST_REF.match(container["image"]), container["image"]
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]
            claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
            assert set(mounts.values()) <= set(volumes) | claims
            ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
            for kind in ("readinessProbe", "livenessProbe"):
                probe = container[kind]
                action = probe.get("httpGet") or probe.get("tcpSocket")
                assert action["port"] in ports, (workload["metadata"]["name"], kind)
        if workload["kind"] == "StatefulSet":
            assert workload["spec"]["replicas"] == 1 and workload["spec"]["updateStrategy"]["type"] == "RollingUpdate"
            continue
        strategy = workload["spec"]["strategy"]["rollingUpdate"]
        assert strategy == {"maxUnavailable": 0, "maxSurge": "25%"}
        assert workload["spec"]["progressDeadlineSeconds"] > 0


def test_scoring_probes_hit_the_service_health_routes(tmp_path: Path):
    from pipeline.server.app import OPEN_ROUTES

    spec = example(tmp_path)
    blue = next(o for o in rendered(spec) if o["kind"] == "Deployment" and o["metadata"]["name"] == "iris-blue")
    container = blue["spec"]["template"]["spec"]["containers"][0]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"]["path"] == "/v2/health/ready" and live["httpGet"]["path"] == "/v2/health/live"
    assert {ready["httpGet"]["path"], live["httpGet"]["path"]} <= OPEN_ROUTES  # probes carry no key
    assert (ready["initialDelaySeconds"], ready["periodSeconds"], ready["timeoutSeconds"]) == (1, 3, 1)
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512M"},
                                      "limits": {"cpu": "500m", "memory": "512M"}}
    assert blue["spec"]["replicas"] == 3


def test_no_secret_or_reference_outside_the_secrets(objects: list[dict]):
    secrets = [SECRET, *KEYS.values()]
    encoded = [base64.b64encode(s.encode()).decode() for s in secrets]
    for item in objects:
        text = json.dumps(item)
        assert "${" not in text, item["metadata"]["name"]
        if item["kind"] == "Secret":
            for value in item["data"].values():
                assert value not in secrets  # base64, as Kubernetes stores it
            continue
        for value in secrets + encoded:
            assert value not in text, (item["kind"], item["metadata"]["name"])


def test_secret_variables_are_secret_refs_and_secrets_carry_the_callers_data(tmp_path: Path):
    objects = rendered(example(tmp_path))
    blue = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "iris-blue")
    env = blue["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "iris-blue-env",
                                                                          "key": "DB_PASSWORD"}}},
                   {"name": "LOG_FORMAT", "value": "json"}]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "iris-blue-env")
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == SECRET
    keys = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "iris-keys")
    assert json.loads(base64.b64decode(keys["data"]["keys.json"])) == KEYS
    without = rendered(example(tmp_path / "again"), secrets=False)
    assert all(o["data"] == {} for o in without if o["kind"] == "Secret")


def test_autoscaling_and_disruption_budgets(tmp_path: Path):
    objects = rendered(example(tmp_path))
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "iris-green"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    target = hpa["spec"]["scaleTargetRef"]
    green = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Deployment", target["name"]))
    assert "replicas" not in green["spec"]  # the autoscaler owns it
    assert green["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"
    budgets = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert budgets == {"iris-blue", "iris-green", "iris-router"}  # shadow runs one instance


def test_server_and_router_configs_are_what_they_read(tmp_path: Path):
    from pipeline.server.router import Routes

    objects = rendered(example(tmp_path))
    for item in objects:
        if item["kind"] == "ConfigMap" and "server.json" in item["data"]:
            config = ServerConfig.from_json(item["data"]["server.json"])
            assert config.port == manifests.PORT and str(config.model_dir) == manifests.MODEL_DIR
            assert str(config.keys_file) == "/etc/mlops-keys/keys.json"
            assert item["immutable"] is True and item["metadata"]["name"].startswith("iris-")
    router = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "iris-router")
    routes = Routes.from_text(router["data"]["router.json"])
    assert routes.traffic == {"blue": 90, "green": 10} and routes.mirror == {"shadow": 20}
    assert routes.backends["blue"] == ["http://iris-blue.ml.svc:8080"]
    service = next(o for o in objects if (o["kind"], o["metadata"]["name"]) == ("Service", "iris"))
    assert service["spec"]["selector"]["app.kubernetes.io/name"] == "mlops-router"


def test_rendering_is_deterministic_and_ordered(tmp_path: Path):
    spec = example(tmp_path)
    first, second = rendered(spec), rendered(spec)
    assert json.dumps(first) == json.dumps(second)
    order = [manifests.KIND_ORDER.index(kind) for kind, _ in kinds(first)]
    assert order == sorted(order)
    assert kinds(first)[:3] == [("Secret", "iris-blue-env"), ("Secret", "iris-keys"), ("ConfigMap", kinds(first)[2][1])]


def test_an_image_not_pinned_by_digest_is_refused(tmp_path: Path):
    spec = example(tmp_path)
    tagged = [DeployRequest(r.endpoint, r.deployment, r.model, image="registry.example.com/ml/env:latest")
              for r in requests(spec)]
    with pytest.raises(TargetError, match="not pinned by digest"):
        render(spec, "cluster", tagged, spec_digest=SPEC_DIGEST, commit=COMMIT, router_image=ROUTER_IMAGE)
    with pytest.raises(TargetError, match="router image"):
        render(spec, "cluster", requests(spec), spec_digest=SPEC_DIGEST, commit=COMMIT, router_image="r:1")


def test_names_and_label_values_are_sanitized():
    long = "a" * 40
    assert object_name(long, long) != object_name(long, long + "b")
    assert len(object_name(long, long)) == 63 and DNS_1123_LABEL.match(object_name(long, long))
    assert object_name("1st", "blue") == "mlops-1st-blue"
    assert label_value("iris:3/sha256:abc") == "iris-3-sha256-abc"
    assert len(label_value("x" * 100)) <= 63 and LABEL_VALUE.match(label_value("-" + "x" * 100 + "."))
    assert manifests.quantity_memory("512m") == "512M" and manifests.quantity_cpu(2.0) == "2"


# -- the new fields in mlops.yaml ---------------------------------------------------------------


def test_the_new_fields_load_with_defaults(tmp_path: Path):
    spec = example(tmp_path, "gateway")
    target = spec.targets["cluster"]
    assert target.routing == "gateway" and target.gateway is not None
    assert (target.gateway.name, target.gateway.namespace) == ("public", "gateways")
    green = spec.endpoints["iris"].deployments["green"]
    assert green.resources.requests == ResourceAmounts("250m", "256Mi")
    assert green.resources.effective_limits == ResourceAmounts(1, "1Gi")
    assert green.scale_settings == ScaleSettings("target_utilization", 2, 6, 60)
    blue = spec.endpoints["iris"].deployments["blue"]
    assert blue.scale_settings == ScaleSettings() and blue.resources.effective_requests == ResourceAmounts(0.5, "512m")
    assert example(tmp_path / "router").targets["cluster"].gateway is None


def test_unchanged_deployments_keep_their_settings_digest():
    """Fields added later count only when set: upgrading mlops restarts nothing."""
    from pipeline.spec.model import Deployment, Endpoint, ModelRef, Resources

    deployment = Deployment("blue", "iris", ModelRef("iris"), resources=Resources(cpu=1.0))
    endpoint = Endpoint("iris", "local", deployments={"blue": deployment})
    assert settings_digest(endpoint, deployment) == "sha256:b5800963331e51a0"  # as before these fields existed


@pytest.mark.parametrize(("routing", "gateway", "expected"), [
    ("gateway", None, "missing required key 'gateway'"),
    ("sideways", {"name": "public"}, "is not one of router, gateway"),
    ("gateway", {"namespace": "gw"}, "missing required key 'name'"),
])
def test_invalid_routing_is_reported_at_its_place(tmp_path: Path, routing, gateway, expected):
    text = ("version: 1\ntargets:\n  cluster:\n    type: kubernetes\n    routing: " + routing + "\n"
            + (f"    gateway: {json.dumps(gateway)}\n" if gateway else ""))
    (tmp_path / "mlops.yaml").write_text(text)
    with pytest.raises(SpecError) as raised:
        load(tmp_path / "mlops.yaml")
    (problem,) = raised.value.problems
    assert expected in problem.message
    assert (problem.line, problem.column) in {(3, 3), (5, 14), (6, 5)}, str(problem)


# -- the collection sink ------------------------------------------------------------------------


def by_kind(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if (o["kind"], o["metadata"]["name"]) == (kind, name))


@pytest.mark.parametrize("routing", ["router", "gateway"])
def test_a_collecting_endpoint_gets_a_sink_on_a_volume_and_its_pods_ship_there(tmp_path: Path, routing: str):
    from pipeline.server.sink import SinkConfig

    objects = rendered(example(tmp_path, routing))
    sink = by_kind(objects, "StatefulSet", "iris-collector")
    pod = sink["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["python", "-m", "pipeline.server.sink"]
    assert container["image"] == ROUTER_IMAGE
    assert container["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[manifests.DATA_DIR] == "data" and "data" not in {v["name"] for v in pod["volumes"]}
    (claim,) = sink["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    service = by_kind(objects, "Service", "iris-collector")
    assert sink["spec"]["serviceName"] == "iris-collector"
    assert service["spec"]["selector"].items() <= sink["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == manifests.SINK_PORT
    config = SinkConfig.from_json(by_kind(objects, "ConfigMap", "iris-collector")["data"]["sink.json"])
    assert config.endpoint == "iris" and str(config.keys_file) == "/etc/mlops-keys/keys.json"
    assert str(config.data_dir) == manifests.DATA_DIR and config.port == manifests.SINK_PORT

    blue = by_kind(objects, "Deployment", "iris-blue")
    server = next(ServerConfig.from_json(o["data"]["server.json"]) for o in objects
                  if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("iris-blue-"))
    assert server.collection_sink == "http://iris-collector.ml.svc:8081"
    grace = blue["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    finishing = server.request_settings.request_timeout_ms / 1000 + 2
    assert grace >= finishing + server.collection_grace_seconds
    green = next(ServerConfig.from_json(o["data"]["server.json"]) for o in objects
                 if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("iris-green-"))
    assert green.collection_sink is None  # collects nothing
    if routing == "gateway":  # the endpoint's Service must not send requests to the sink
        endpoint = by_kind(objects, "Service", "iris")
        assert not endpoint["spec"]["selector"].items() <= sink["spec"]["template"]["metadata"]["labels"].items()


def test_the_sink_volume_takes_the_targets_size_and_class(tmp_path: Path):
    example(tmp_path)
    data = yaml.safe_load((tmp_path / "mlops.yaml").read_text())
    data["targets"]["cluster"]["collection"] = {"size": "20Gi", "storage_class": "fast-ssd"}
    (tmp_path / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load(tmp_path / "mlops.yaml")
    sink = by_kind(rendered(spec), "StatefulSet", "iris-collector")
    assert sink["spec"]["volumeClaimTemplates"][0]["spec"] == {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast-ssd"}
    for version in (VERSIONS[0], VERSIONS[-1]):
        kubernetes_validate.validate(sink, version, strict=True)
    data["targets"]["cluster"]["collection"] = {"size": "lots"}
    (tmp_path / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError, match="collection"):
        load(tmp_path / "mlops.yaml")


def test_an_endpoint_that_collects_nothing_has_no_sink(tmp_path: Path):
    example(tmp_path)
    data = yaml.safe_load((tmp_path / "mlops.yaml").read_text())
    for deployment in data["endpoints"]["iris"]["deployments"].values():
        deployment.pop("data_collector", None)
    (tmp_path / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    objects = rendered(load(tmp_path / "mlops.yaml"))
    assert not [o for o in objects if "collector" in o["metadata"]["name"]]
    assert all(ServerConfig.from_json(o["data"]["server.json"]).collection_sink is None
               for o in objects if o["kind"] == "ConfigMap" and "server.json" in o["data"])
