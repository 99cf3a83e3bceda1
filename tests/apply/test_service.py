"""The apply service on the shipped fakes: what plan, apply and destroy promise, without processes."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from pipeline.apply.ledger import Ledger
from pipeline.apply.lock import StateLock
from pipeline.apply.service import Deployer, Reporter
from pipeline.errors import HealthCheckFailed, LockError, MlopsError, StalePlanError
from pipeline.plan import Plan
from pipeline.registry.memory import InMemoryRegistry
from pipeline.spec.loader import load
from pipeline.targets.fake import FakeTarget

REPO = Path(__file__).resolve().parents[2]
SPEC = """\
version: 1
registry: .mlops/registry
models:
  iris: {path: models/iris, flavor: sklearn}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    traffic: {blue: 100}
    deployments:
      blue: {model: iris}
"""


@pytest.fixture
def deployer(tmp_path):
    shutil.copytree(REPO / "models" / "iris", tmp_path / "models" / "iris")
    (tmp_path / "mlops.yaml").write_text(SPEC)
    spec = load(tmp_path / "mlops.yaml")
    registry = InMemoryRegistry()
    service = Deployer(spec, tmp_path / "mlops.yaml", registry, {"local": FakeTarget("local")}, None,
                       tmp_path / ".mlops", lineage=lambda: {"commit": "abc123", "author": "ci"})
    yield service
    registry.close()


def served_model(service: Deployer) -> str:
    _, deployments = service.targets["local"].observe()
    return next(d.model for d in deployments if d.key == "web/blue")


def test_apply_registers_deploys_routes_protects_and_records(deployer):
    applied = deployer.apply()
    assert applied.outcome is not None and applied.outcome.error is None
    assert served_model(deployer) == "iris:1"
    assert deployer.registry.users("iris", 1) == ["web/blue"]
    (entry,) = Ledger(deployer.spec.registry_path()).entries()
    assert entry.outcome == "ok" and entry.commit == "abc123" and entry.served["web/blue"]["traffic"] == 100


def test_a_second_apply_has_nothing_to_do(deployer):
    deployer.apply()
    again = deployer.apply()
    assert again.outcome is None and not again.plan.has_changes


def test_the_reporter_sees_the_plan_then_every_step(deployer):
    seen = []
    deployer.apply(report=Reporter(plan=lambda plan, saved: seen.append(("plan", saved)),
                                   progress=lambda step, status, detail: seen.append((status, step.id))))
    assert seen[0] == ("plan", False)
    assert ("done", "register:iris") in seen and ("done", "deploy:web/blue") in seen


def test_a_cancelled_confirmation_changes_nothing(deployer):
    def refuse(plan):
        raise MlopsError("cancelled")

    with pytest.raises(MlopsError, match="cancelled"):
        deployer.apply(report=Reporter(confirm=refuse))
    assert deployer.registry.list_versions("iris") == [] and deployer.targets["local"].observe() == ([], [])


def test_a_saved_plan_with_an_added_step_is_refused(deployer):
    saved = json.loads(deployer.plan().to_json())
    saved["steps"].append({"id": "delete:web", "kind": "delete", "action": "delete", "address": "endpoint.web",
                           "reason": "slipped in", "data": {"target": "local", "endpoint": "web"}})
    with pytest.raises(StalePlanError, match="other steps"):
        deployer.apply(Plan.from_json(json.dumps(saved)))
    assert deployer.targets["local"].observe() == ([], [])


def test_a_deployment_that_never_gets_ready_fails_the_apply_and_is_recorded(deployer):
    deployer.apply()
    deployer.targets["local"].fail_health_check("web", "blue", "the model never loads")
    (deployer.spec.root / "models" / "iris" / "NOTES.md").write_text("retrained\n")
    applied = deployer.apply()
    assert isinstance(applied.outcome.error, HealthCheckFailed)
    assert served_model(deployer) == "iris:1"  # the old version keeps serving
    assert [e.outcome for e in Ledger(deployer.spec.registry_path()).entries()] == ["ok", "failed"]


def test_apply_waits_for_a_live_holder_of_the_lock(deployer):
    held = StateLock(deployer.state_dir).acquire()
    try:
        with pytest.raises(LockError, match="locked by apply"):
            deployer.apply(lock_timeout=0.2)
    finally:
        held.release()


def test_destroy_removes_the_endpoints_and_records_it(deployer):
    deployer.apply()
    notices = []
    assert deployer.destroy(report=Reporter(notice=notices.append)) == ["web"]
    assert deployer.targets["local"].observe() == ([], [])
    assert deployer.registry.users("iris", 1) == []
    assert Ledger(deployer.spec.registry_path()).entries()[-1].outcome == "destroyed"
    assert "  - deleted endpoint web" in notices


def test_a_transient_target_failure_is_retried_and_reported(deployer, monkeypatch):
    from pipeline.apply import executor

    monkeypatch.setattr(executor, "BACKOFF_SECONDS", 0.01)
    target = deployer.targets["local"]
    real, failures = target.deploy, [ConnectionError("engine busy")]

    def flaky(request):
        if failures:
            raise failures.pop()
        return real(request)

    monkeypatch.setattr(target, "deploy", flaky)
    retries = []
    applied = deployer.apply(report=Reporter(progress=lambda step, status, detail: status == "retry" and
                                             retries.append((step.id, detail))))
    assert applied.outcome.error is None and served_model(deployer) == "iris:1"
    assert retries and retries[0][0] == "deploy:web/blue" and "engine busy" in retries[0][1]


# -- a target's own lock (a namespace's Lease) -------------------------------------------------


class LeasedTarget(FakeTarget):
    """A fake target in a shared place: its lock is a real Lease on an in-memory cluster."""

    def __init__(self, name: str, cluster):
        super().__init__(name)
        self.cluster = cluster

    def lock(self, operation, notice=None):
        from pipeline.targets.kubernetes.lease import LeaseLock

        return LeaseLock(self.cluster, operation=operation, notice=notice, sleep=lambda s: time.sleep(0.01),
                         scope=f"namespace {self.cluster.namespace}")


def leased(tmp_path: Path, cluster, folder: str) -> Deployer:
    """A clone of the project with its own state folder (so its own state lock) on the shared cluster."""
    root = tmp_path / folder
    shutil.copytree(REPO / "models" / "iris", root / "models" / "iris")
    (root / "mlops.yaml").write_text(SPEC)
    spec = load(root / "mlops.yaml")
    return Deployer(spec, root / "mlops.yaml", InMemoryRegistry(), {"local": LeasedTarget("local", cluster)}, None,
                    root / ".mlops")


def test_an_apply_holds_the_targets_lock_throughout_and_releases_it(tmp_path):
    from tests.targets.kubernetes.fake_cluster import FakeCluster

    cluster = FakeCluster()
    service = leased(tmp_path, cluster, "one")
    seen = []
    service.apply(report=Reporter(progress=lambda step, status, detail: seen.append(
        cluster.objects.get(("Lease", "mlops-apply"), {}).get("spec", {}).get("holderIdentity"))))
    assert seen and all(seen) and len(set(seen)) == 1  # one holder from the first step to the last
    assert ("Lease", "mlops-apply") not in cluster.objects
    service.destroy()
    assert [c for c in cluster.calls if c[1] == "Lease"][-1][0] == "delete"


def test_a_second_apply_against_the_same_namespace_fails_naming_the_holder(tmp_path):
    from tests.targets.kubernetes.fake_cluster import FakeCluster

    cluster = FakeCluster()
    first, second = leased(tmp_path, cluster, "one"), leased(tmp_path, cluster, "two")
    started, finish = threading.Event(), threading.Event()

    def slow(step, status, detail):
        if status == "start" and step.kind == "deploy":
            started.set()
            finish.wait(10)

    runner = threading.Thread(target=lambda: first.apply(report=Reporter(progress=slow)))
    runner.start()
    try:
        assert started.wait(10)
        holder = cluster.objects[("Lease", "mlops-apply")]["spec"]["holderIdentity"]
        with pytest.raises(LockError, match=rf"namespace ml is locked by apply by .*lock id {holder}"):
            second.apply(lock_timeout=0.05)
        assert second.targets["local"].observe() == ([], [])  # nothing was planned or changed
        assert not StateLock(second.state_dir).holder()  # its state lock was given back
    finally:
        finish.set()
        runner.join()
    assert second.apply(lock_timeout=1).outcome is not None  # once released, it runs


def test_force_unlock_finds_the_lease_by_its_id(tmp_path):
    from pipeline.targets.kubernetes.lease import LeaseLock
    from tests.targets.kubernetes.fake_cluster import FakeCluster

    cluster = FakeCluster()
    service = leased(tmp_path, cluster, "one")
    dead = LeaseLock(cluster, duration=3600).acquire()  # an apply that died holding it
    with pytest.raises(LockError, match="does not match"):
        service.force_unlock("wrong")
    what, holder = service.force_unlock(str(dead.id))
    assert what == "the lock of namespace ml" and holder["id"] == dead.id
    assert ("Lease", "mlops-apply") not in cluster.objects
    with pytest.raises(LockError, match="not locked"):
        service.force_unlock(str(dead.id))
