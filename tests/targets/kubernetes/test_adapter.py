"""The Kubernetes adapter against an in-memory fake of its one API boundary (``client.Cluster``)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.errors import HealthCheckFailed, LockError, TargetError
from pipeline.spec.model import Spec
from pipeline.state import DEGRADED, RUNNING
from pipeline.targets.kubernetes.adapter import KubernetesTarget
from pipeline.targets.kubernetes.client import ApiError
from pipeline.targets.kubernetes.lease import LeaseLock
from pipeline.targets.kubernetes.manifests import object_name
from tests.targets.kubernetes.fake_cluster import FakeCluster
from tests.targets.kubernetes.test_manifests import IMAGE, example, requests

BROKEN = "registry.example.com/ml/mlops-env-sklearn@sha256:" + "f" * 64


def target(spec: Spec, cluster: FakeCluster, **options) -> KubernetesTarget:
    options.setdefault("rollout_timeout", 5)
    return KubernetesTarget(spec.targets["cluster"], spec.state_dir(), project=spec.project_id(), client=cluster,
                            sleep=lambda seconds: None, **options)


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return example(tmp_path)


def by_name(spec: Spec, name: str):
    return next(r for r in requests(spec) if r.deployment.name == name)


def deploy_all(spec: Spec, adapter: KubernetesTarget) -> None:
    endpoint = spec.endpoints["iris"]
    adapter.ensure_endpoint(endpoint)
    for request in requests(spec):
        adapter.deploy(request)
    adapter.set_traffic("iris", endpoint.traffic, endpoint.mirror_traffic)


def test_deploy_applies_what_is_referenced_before_what_references_it(spec):
    cluster = FakeCluster()
    observed = target(spec, cluster).deploy(by_name(spec, "blue"))
    applied = [(kind, name) for verb, kind, name in cluster.calls if verb == "apply"]
    blue = [kind for kind, name in applied if name.startswith("iris-blue")]
    assert blue == ["Secret", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"]
    assert applied.index(("Secret", "iris-keys")) < applied.index(("Deployment", "iris-router"))
    assert applied.index(("ConfigMap", "iris-router")) < applied.index(("Deployment", "iris-router"))
    assert (observed.status, observed.ready_instances, observed.instance_count) == (RUNNING, 3, 3)
    assert observed.model == "iris-classifier:3" and observed.image == IMAGE


def test_a_conflict_names_the_other_field_manager_and_is_never_forced(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    adapter.deploy(by_name(spec, "blue"))
    cluster.scale("iris-blue", 5, manager="kubectl")
    with pytest.raises(TargetError, match='changed by kubectl') as caught:
        adapter.deploy(by_name(spec, "blue"))
    assert not caught.value.transient
    assert cluster.objects[("Deployment", "iris-blue")]["spec"]["replicas"] == 5


def test_transient_errors_are_retried(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    cluster.errors = [ApiError(503, "the server is currently unable to handle the request"),
                      ApiError(0, "ProtocolError: connection reset by peer"), ApiError(429, "too many requests")]
    assert adapter.deploy(by_name(spec, "blue")).status == RUNNING
    assert not cluster.errors


def test_transient_errors_past_the_retries_are_marked_transient(spec):
    cluster = FakeCluster()
    cluster.errors = [ApiError(500, "etcdserver: request timed out")] * 10
    with pytest.raises(TargetError, match="etcdserver") as caught:
        target(spec, cluster).keys("iris")
    assert caught.value.transient


def test_a_validation_error_stops_at_once_with_the_api_message(spec):
    cluster = FakeCluster()
    message = 'Deployment.apps "iris-blue" is invalid: spec.template.spec.containers[0].image: Required value'
    cluster.apply_errors = [ApiError(422, message, "Invalid")]
    with pytest.raises(TargetError, match="HTTP 422") as caught:
        target(spec, cluster).deploy(by_name(spec, "blue"))
    assert message in str(caught.value) and not caught.value.transient
    assert len([c for c in cluster.calls if c[0] == "apply"]) == 1


def test_a_rollout_that_never_completes_applies_the_previous_spec_back(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    adapter.deploy(by_name(spec, "blue"))
    cluster.never_ready.add(BROKEN)
    broken = dataclasses.replace(by_name(spec, "blue"), image=BROKEN)
    with pytest.raises(HealthCheckFailed) as caught:
        adapter.deploy(broken)
    message = str(caught.value)
    assert "progress deadline exceeded" in message and "previous version was applied back" in message
    assert "BackOff: Back-off restarting failed container" in message and "ModelLoadError" in message
    live = cluster.objects[("Deployment", "iris-blue")]
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert adapter.observe()[1][0].status == RUNNING


def test_a_first_rollout_that_fails_leaves_nothing(spec):
    cluster = FakeCluster()
    cluster.never_ready.add(BROKEN)
    with pytest.raises(HealthCheckFailed, match="nothing was deployed"):
        target(spec, cluster).deploy(dataclasses.replace(by_name(spec, "blue"), image=BROKEN))
    assert not [name for kind, name in cluster.objects if name.startswith("iris-blue") and kind != "Event"]


def test_an_image_not_pinned_by_digest_is_refused(spec):
    request = dataclasses.replace(by_name(spec, "blue"), image="registry.example.com/ml/mlops-env-sklearn:abc")
    with pytest.raises(TargetError, match="not pinned by digest"):
        target(spec, FakeCluster()).deploy(request)


def test_the_model_image_hook_picks_the_pods_image_and_observe_reports_the_environment_image(spec):
    cluster = FakeCluster()
    request = dataclasses.replace(by_name(spec, "blue"), image="registry.example.com/ml/mlops-env-sklearn:abc")
    observed = target(spec, cluster, model_image=lambda r: BROKEN.replace("f", "1")).deploy(request)
    assert observed.image == "registry.example.com/ml/mlops-env-sklearn:abc"
    pods = cluster.objects[("Deployment", "iris-blue")]["spec"]["template"]["spec"]["containers"][0]
    assert pods["image"] == BROKEN.replace("f", "1")


@pytest.mark.parametrize("routing", ["router", "gateway"])
def test_observe_reads_back_what_was_deployed(tmp_path, routing):
    spec = example(tmp_path, routing)
    cluster = FakeCluster()
    deploy_all(spec, target(spec, cluster))
    endpoints, deployments = target(spec, cluster).observe()  # a fresh adapter: nothing cached
    endpoint = spec.endpoints["iris"]
    assert [(e.name, dict(e.traffic), dict(e.mirror_traffic), e.auth_mode) for e in endpoints] == [
        ("iris", dict(endpoint.traffic), dict(endpoint.mirror_traffic), "key")]
    assert endpoints[0].url == "http://iris.ml.svc.cluster.local:8080"
    wanted = {r.deployment.name: (r.model.ref, r.image, r.deployment.instance_count, r.settings_digest,
                                  r.deployment.environment) for r in requests(spec)}
    assert {d.name: (d.model, d.image, d.instance_count, d.settings_digest, d.environment)
            for d in deployments} == wanted
    assert all(d.status == RUNNING for d in deployments)


def test_traffic_moves_only_with_set_traffic(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    deploy_all(spec, adapter)
    adapter.ensure_endpoint(dataclasses.replace(spec.endpoints["iris"], traffic={"blue": 100}, mirror_traffic={}))
    assert adapter.observe()[0][0].traffic == {"blue": 90, "green": 10}
    target(spec, cluster).set_traffic("iris", {"blue": 50, "green": 50}, {})  # no endpoint cached
    assert adapter.observe()[0][0].traffic == {"blue": 50, "green": 50}


def test_a_deployment_scaled_by_hand_is_drift(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    deploy_all(spec, adapter)
    cluster.scale("iris-blue", 5)
    blue = next(d for d in adapter.observe()[1] if d.name == "blue")
    assert (blue.instance_count, blue.status) == (5, DEGRADED)


def test_a_deployment_edited_by_hand_has_a_settings_digest_that_matches_nothing(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    deploy_all(spec, adapter)
    cluster.edit_image("iris-blue", BROKEN)
    blue = next(d for d in adapter.observe()[1] if d.name == "blue")
    assert blue.settings_digest != by_name(spec, "blue").settings_digest
    assert "kubectl-edit" in blue.settings_digest


def test_a_deployment_deleted_by_hand_is_missing(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    deploy_all(spec, adapter)
    cluster.delete("apps/v1", "Deployment", "iris-green")
    assert sorted(d.name for d in adapter.observe()[1]) == ["blue", "shadow"]


def test_delete_and_delete_endpoint_touch_only_this_projects_objects(spec, tmp_path):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    deploy_all(spec, adapter)
    other = KubernetesTarget(spec.targets["cluster"], tmp_path, project="another-project", client=cluster,
                             sleep=lambda seconds: None)
    before = dict(cluster.objects)
    cluster.objects = {}
    deploy_all(spec, other)  # the same names under another project's label: kept apart by renaming
    theirs = {(kind, f"theirs-{name}"): {**obj, "metadata": {**obj["metadata"], "name": f"theirs-{name}"}}
              for (kind, name), obj in cluster.objects.items() if kind != "Pod"}
    cluster.objects = {**before, **theirs}
    adapter.delete("iris", "shadow")
    assert not [n for k, n in cluster.objects if n.startswith("iris-shadow") and k != "Pod"]
    assert ("Deployment", "iris-blue") in cluster.objects
    adapter.delete_endpoint("iris")
    left = {key for key in cluster.objects if key[0] not in ("Pod", "Event")}
    assert left == set(theirs)
    assert adapter.observe() == ([], [])
    assert adapter.url("iris") is None


def test_keys_live_in_the_endpoint_secret_and_rotate_one_at_a_time(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    adapter.ensure_endpoint(spec.endpoints["iris"])
    first = adapter.keys("iris")
    adapter.ensure_endpoint(spec.endpoints["iris"])
    assert adapter.keys("iris") == first  # ensuring again keeps them
    rotated = adapter.rotate_key("iris", "secondary")
    assert rotated["primary"] == first["primary"] and rotated["secondary"] != first["secondary"]
    assert target(spec, cluster).keys("iris") == rotated
    with pytest.raises(TargetError, match="no keys"):
        adapter.keys("other")


def test_logs_come_from_the_pods(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    adapter.deploy(by_name(spec, "blue"))
    cluster.logs[f"{object_name('iris', 'blue')}-1-0"] = "one\ntwo\nthree"
    assert "==> iris-blue-1-0 <==\ntwo\nthree" in adapter.logs("iris", "blue", lines=2)


def test_metrics_come_from_each_ready_pod_through_the_pod_proxy(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    adapter.deploy(by_name(spec, "blue"))
    pod = f"{object_name('iris', 'blue')}-1-0"
    cluster.pod_answers[(pod, 8080, "/metrics")] = b"mlops_requests_total 3.0\n"
    assert adapter.metrics("iris", "blue") == {pod: "mlops_requests_total 3.0\n"}
    assert adapter.metrics("iris", "green") == {}


# -- the Lease lock ---------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.moment

    def sleep(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def lease(cluster: FakeCluster, clock: Clock, **options) -> LeaseLock:
    return LeaseLock(cluster, now=clock, sleep=clock.sleep, **options)


def test_lease_acquire_contend_release():
    cluster, clock = FakeCluster(), Clock()
    first = lease(cluster, clock).acquire()
    assert cluster.objects[("Lease", "mlops-apply")]["spec"]["holderIdentity"] == first.id
    with pytest.raises(LockError, match=r"namespace ml is locked by apply by .*lock id " + str(first.id)):
        lease(cluster, clock).acquire(timeout=5)
    first.release()
    second = lease(cluster, clock).acquire(timeout=0)
    assert second.id and second.id != first.id


def test_an_expired_lease_is_taken_over_with_a_notice():
    cluster, clock = FakeCluster(), Clock()
    first = lease(cluster, clock, duration=10).acquire()
    notices: list[str] = []
    second = lease(cluster, clock, notice=notices.append).acquire(timeout=30)  # waits until it expires
    assert second.holder()["id"] == second.id != first.id
    assert notices and first.id in notices[0] and "expired" in notices[0]
    first.release()  # no longer the holder: releases nothing
    assert second.holder()["id"] == second.id


def test_renew_keeps_a_lease_from_expiring():
    cluster, clock = FakeCluster(), Clock()
    first = lease(cluster, clock, duration=10).acquire()
    for _ in range(3):
        clock.sleep(8)
        first.renew()
    with pytest.raises(LockError):
        lease(cluster, clock).acquire(timeout=5)


def test_force_unlock_needs_the_holders_id():
    cluster, clock = FakeCluster(), Clock()
    first = lease(cluster, clock).acquire()
    other = lease(cluster, clock)
    with pytest.raises(LockError, match="does not match"):
        other.force_unlock("wrong")
    assert other.force_unlock(str(first.id))["id"] == first.id
    with pytest.raises(LockError, match="not locked"):
        other.force_unlock(str(first.id))


def test_two_waiters_racing_for_a_new_lease_do_not_both_win():
    cluster, clock = FakeCluster(), Clock()
    lease(cluster, clock).acquire()
    cluster.objects.clear()
    racer = lease(cluster, clock)
    original = cluster.create

    def create_after_someone_else(obj):
        cluster.create = original
        lease(cluster, clock).acquire()  # the other waiter wins the race
        return original(obj)

    cluster.create = create_after_someone_else  # type: ignore[method-assign]
    with pytest.raises(LockError, match="is locked by"):
        racer.acquire(timeout=2)


def test_the_target_lock_is_the_namespaces_lease_and_held_it_renews_until_released(spec):
    cluster = FakeCluster()
    lock = target(spec, cluster).lock("apply")
    assert isinstance(lock, LeaseLock) and lock.scope == "kubernetes (current context) namespace ml"
    lock.renew_every = 0.01
    with lock.acquire(timeout=0):
        first = cluster.objects[("Lease", "mlops-apply")]["metadata"]["resourceVersion"]
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while cluster.objects[("Lease", "mlops-apply")]["metadata"]["resourceVersion"] == first:
            assert datetime.now(UTC) < deadline, "the Lease was never renewed"
    assert ("Lease", "mlops-apply") not in cluster.objects and lock.id is None
    assert ("replace", "Lease", "mlops-apply") in cluster.calls


def test_a_lease_lost_while_held_is_said_once_and_not_renewed_again(spec):
    cluster, notices = FakeCluster(), []
    lock = LeaseLock(cluster, notice=notices.append, renew_every=0.01)
    with lock.acquire(timeout=0):
        LeaseLock(cluster).force_unlock(str(lock.id))  # someone released it by hand
        assert lock._renewer is not None
        lock._renewer.join(5)
    assert len(notices) == 1 and "no longer held" in notices[0]


def test_what_serves_names_the_image_the_pods_pull_so_gc_keeps_it(spec):
    from pipeline.apply.observe import served

    adapter = target(spec, FakeCluster(), model_image=lambda request: BROKEN)
    deploy_all(spec, adapter)
    serving = served(spec, {"cluster": adapter})
    assert serving["iris/blue"]["pinned_image"] == BROKEN and serving["iris/blue"]["image"] == IMAGE


def test_a_model_update_does_not_restart_the_router(spec):
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    adapter.deploy(by_name(spec, "blue"))
    router = cluster.objects[("Deployment", "iris-router")]
    adapter.model_image = lambda request: BROKEN.replace("f" * 64, "9" * 64)  # the next model image
    adapter.deploy(by_name(spec, "blue"))
    assert cluster.objects[("Deployment", "iris-router")]["spec"] == router["spec"]
