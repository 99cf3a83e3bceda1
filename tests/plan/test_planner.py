"""The pure planner on hand-built desired and actual states."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.builders import image_ref
from pipeline.errors import MlopsError, ReferenceNotFound
from pipeline.plan import Plan, reconcile, render_markdown, render_text
from pipeline.spec.loader import load
from pipeline.spec.model import settings_digest
from pipeline.state import STOPPED, Actual, ObservedDeployment, ObservedEndpoint, RegisteredModel

SPEC = """\
version: 1
models:
  iris: {path: m, flavor: sklearn}
environments:
  sk: {python: "3.11"}
targets:
  local: {type: local}
  box: {type: docker}
endpoints:
  web:
    target: local
    traffic: {blue: 90, green: 10}
    deployments:
      blue: {model: "iris:1"}
      green: {model: iris}
  boxed:
    target: box
    deployments:
      only: {model: iris, environment: sk}
"""

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
ENV = "sha256:" + "e" * 64


@pytest.fixture
def spec(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.skops").write_text("x")
    path = tmp_path / "mlops.yaml"
    path.write_text(SPEC)
    return load(path)


def observed(spec, key: str, model: str, **changes) -> ObservedDeployment:
    endpoint_name, name = key.split("/")
    endpoint = spec.endpoints[endpoint_name]
    values = {"endpoint": endpoint_name, "name": name, "target": endpoint.target, "model": model,
              "instance_count": 1, "ready_instances": 1,
              "settings_digest": settings_digest(endpoint, endpoint.deployments[name])}
    if endpoint.target == "box":
        values["image"] = image_ref("sk", ENV)
    return ObservedDeployment(**{**values, **changes})


def converged(spec, **overrides) -> Actual:
    """The actual state in which everything in SPEC already runs (content D1 is version 1)."""
    values = dict(
        models={"iris": RegisteredModel("iris", {1: D1})},
        model_contents={"iris": D1},
        environment_digests={"docker": {"sk": ENV}},
        environment_refs={"box": {"sk": image_ref("sk", ENV)}},
        images=frozenset({image_ref("sk", ENV)}),
        endpoints={"web": ObservedEndpoint("web", "local", traffic={"blue": 90, "green": 10}),
                   "boxed": ObservedEndpoint("boxed", "box", traffic={"only": 100})},
        deployments={k: observed(spec, k, "iris:1") for k in ("web/blue", "web/green", "boxed/only")})
    values.update(overrides)
    return Actual(**values)


def kinds(plan: Plan) -> list[str]:
    return [step.id for step in plan.steps]


def test_nothing_to_do_when_everything_runs(spec):
    plan = reconcile(spec, converged(spec))
    assert plan.steps == () and not plan.has_changes
    assert render_text(plan) == "No changes. The deployed state matches mlops.yaml."


def test_empty_world_plans_every_wave_in_order(spec):
    actual = Actual(models={"iris": RegisteredModel("iris", {1: D1})}, model_contents={"iris": D2},
                    environment_digests={"docker": {"sk": ENV}}, environment_refs={"box": {"sk": image_ref("sk", ENV)}})
    plan = reconcile(spec, actual)
    assert kinds(plan) == ["register:iris", f"build:{image_ref('sk', ENV)}", "endpoint:boxed", "deploy:boxed/only",
                           "endpoint:web", "deploy:web/blue", "deploy:web/green", "traffic:boxed", "traffic:web"]
    assert plan.steps[3].depends_on == ("register:iris", f"build:{image_ref('sk', ENV)}", "endpoint:boxed")
    assert plan.summary() == "Plan: 7 to add, 2 to change, 0 to destroy."


def test_pinned_version_that_does_not_exist_names_its_place(spec):
    actual = converged(spec, models={"iris": RegisteredModel("iris", {2: D2})}, model_contents={"iris": D2})
    with pytest.raises(ReferenceNotFound, match=r"mlops.yaml:14:14: model version iris:1 is not registered"):
        reconcile(spec, actual)


def test_new_content_registers_then_updates_the_unpinned_deployments(spec):
    plan = reconcile(spec, converged(spec, model_contents={"iris": D2}))
    assert kinds(plan) == ["register:iris", "update:boxed/only", "update:web/green"]
    update = plan.steps[2]
    assert update.before == {"model": "iris:1"} and update.after == {"model": "iris:2"}
    assert update.depends_on == ("register:iris",)
    assert update.data.model_version is None and update.data.model_digest == D2
    assert plan.summary() == "Plan: 1 to add, 2 to change, 0 to destroy."


def test_missing_image_is_built_once_and_only_for_docker(spec):
    other = "sha256:" + "f" * 64
    plan = reconcile(spec, converged(spec, environment_digests={"docker": {"sk": other}},
                                     environment_refs={"box": {"sk": image_ref("sk", other)}}))
    assert kinds(plan) == [f"build:{image_ref('sk', other)}", "update:boxed/only"]
    assert plan.steps[1].after == {"image": image_ref("sk", other)}


def test_stopped_deployment_is_drift_and_gets_healed(spec):
    actual = converged(spec)
    deployments = dict(actual.deployments)
    deployments["web/blue"] = observed(spec, "web/blue", "iris:1", ready_instances=0, status=STOPPED)
    plan = reconcile(spec, converged(spec, deployments=deployments))
    assert kinds(plan) == ["update:web/blue"]
    assert "drift: 0 of 1 instances ready" in plan.steps[0].reason


def test_model_changed_outside_mlops_is_drift(spec):
    deployments = dict(converged(spec).deployments)
    deployments["web/blue"] = observed(spec, "web/blue", "iris:7")
    plan = reconcile(spec, converged(spec, deployments=deployments))
    assert plan.steps[0].before == {"model": "iris:7"} and plan.steps[0].after == {"model": "iris:1"}


def test_deployment_added_outside_is_kept_without_prune_and_deleted_with_it(spec):
    deployments = dict(converged(spec).deployments)
    deployments["web/stray"] = observed(spec, "web/blue", "iris:1", name="stray")
    actual = converged(spec, deployments=deployments)
    kept = reconcile(spec, actual)
    assert kinds(kept) == ["keep:web/stray"] and not kept.has_changes
    assert "not managed any more, kept" in kept.steps[0].reason
    pruned = reconcile(spec, actual, prune=True)
    assert kinds(pruned) == ["delete:web/stray"] and pruned.counts()["destroy"] == 1


def test_traffic_change_is_its_own_step_after_deployments(spec):
    endpoints = dict(converged(spec).endpoints)
    endpoints["web"] = ObservedEndpoint("web", "local", traffic={"blue": 100})
    plan = reconcile(spec, converged(spec, endpoints=endpoints))
    assert kinds(plan) == ["traffic:web"]
    assert plan.steps[0].after["traffic"] == {"blue": 90, "green": 10}


def test_target_filter_keeps_only_that_deployment_and_what_it_needs(spec):
    plan = reconcile(spec, converged(spec, model_contents={"iris": D2}), targets={"boxed/only"})
    assert kinds(plan) == ["register:iris", "update:boxed/only", ]


def test_plan_round_trips_through_json(spec):
    plan = reconcile(spec, converged(spec, model_contents={"iris": D2}), spec_digest="sha256:abc", created="t")
    assert Plan.from_json(plan.to_json()) == plan


def test_garbled_plan_file_is_a_clean_error():
    with pytest.raises(MlopsError, match="not a plan file"):
        Plan.from_json("{not json")
    with pytest.raises(MlopsError, match="format version"):
        Plan.from_json('{"format_version": 99}')


def test_markdown_has_the_marker_and_a_summary_table(spec):
    plan = reconcile(spec, converged(spec, model_contents={"iris": D2}), created="t")
    markdown = render_markdown(plan)
    assert markdown.startswith("<!-- mlops-plan -->")
    assert "| register | 1 | 0 | 0 | 0 |" in markdown and "**Plan: 1 to add, 2 to change, 0 to destroy.**" in markdown


def test_ten_thousand_deployments_plan_fast(spec):
    import time

    deployments = {f"web/d{i}": observed(spec, "web/blue", "iris:1", name=f"d{i}") for i in range(10_000)}
    started = time.perf_counter()
    plan = reconcile(spec, converged(spec, deployments={**converged(spec).deployments, **deployments}))
    assert len(plan.steps) == 10_000 and time.perf_counter() - started < 5


def test_markdown_for_a_fixed_plan_matches_the_expected_file(spec):
    plan = reconcile(spec, converged(spec, model_contents={"iris": D2}), spec_digest="sha256:" + "5" * 64,
                     created="2026-01-01T00:00:00+00:00")
    expected = Path(__file__).parent / "expected" / "plan.md"
    assert render_markdown(plan) == expected.read_text()


def test_new_endpoint_shows_no_default_mirror_traffic_as_a_change(spec):
    """Every plan of a new endpoint used to show the noise 'mirror_traffic: none → {}'."""
    actual = Actual(models={"iris": RegisteredModel("iris", {1: D1})}, model_contents={"iris": D1},
                    environment_digests={"docker": {"sk": ENV}})
    text = render_text(reconcile(spec, actual))
    assert "mirror_traffic" not in text and "traffic: {} → {blue: 90, green: 10}" in text


def test_observed_unset_mirror_and_zero_shares_equal_the_default(spec):
    endpoints = dict(converged(spec).endpoints)
    endpoints["web"] = ObservedEndpoint("web", "local", traffic={"blue": 90, "green": 10, "gone": 0},
                                        mirror_traffic=None)
    assert reconcile(spec, converged(spec, endpoints=endpoints)).steps == ()


def test_markdown_shows_values_as_yaml_not_python(spec):
    endpoints = dict(converged(spec).endpoints)
    endpoints["web"] = ObservedEndpoint("web", "local", traffic={"blue": 100})
    markdown = render_markdown(reconcile(spec, converged(spec, endpoints=endpoints)))
    assert "traffic: {blue: 100} → {blue: 90, green: 10}" in markdown and "'blue'" not in markdown


def test_kept_deployments_are_counted_in_the_summary(spec):
    deployments = dict(converged(spec).deployments)
    deployments["web/stray"] = observed(spec, "web/blue", "iris:1", name="stray")
    plan = reconcile(spec, converged(spec, deployments=deployments))
    assert plan.counts()["kept"] == 1 and plan.summary().endswith("0 to destroy, 1 kept.")
    assert "**Plan: 0 to add, 0 to change, 0 to destroy, 1 kept.**" in render_markdown(plan)


REGISTRY_REFS = """\
version: 1
targets:
  local: {type: local}
endpoints:
  fraud:
    target: local
    traffic: {blue: 100}
    deployments:
      blue: {model: "models:/fraud@champion"}
      green: {model: "models:/fraud/1"}
"""


@pytest.fixture
def by_alias(tmp_path: Path):
    path = tmp_path / "mlops.yaml"
    path.write_text(REGISTRY_REFS)
    return load(path)


def test_registry_references_resolve_to_registered_versions_and_register_nothing(by_alias):
    actual = Actual(models={"fraud": RegisteredModel("fraud", {1: D1, 2: D2})}, aliases={"fraud": {"champion": 2}})
    plan = reconcile(by_alias, actual)
    assert kinds(plan) == ["endpoint:fraud", "deploy:fraud/blue", "deploy:fraud/green", "traffic:fraud"]
    models = {step.id: step.after["model"] for step in plan.steps if step.kind == "deploy"}
    assert models == {"deploy:fraud/blue": "fraud:2", "deploy:fraud/green": "fraud:1"}


def test_a_moved_alias_is_an_update_that_says_so(by_alias):
    endpoint = ObservedEndpoint("fraud", "local", traffic={"blue": 100})
    deployments = {k: observed(by_alias, k, "fraud:1") for k in ("fraud/blue", "fraud/green")}
    actual = Actual(models={"fraud": RegisteredModel("fraud", {1: D1, 2: D2})}, aliases={"fraud": {"champion": 2}},
                    endpoints={"fraud": endpoint}, deployments=deployments)
    (step,) = reconcile(by_alias, actual).steps
    assert step.id == "update:fraud/blue" and "fraud:1 → fraud:2 (models:/fraud@champion moved)" in step.reason
    assert reconcile(by_alias, Actual(**{**actual.__dict__, "aliases": {"fraud": {"champion": 1}}})).steps == ()


def test_a_missing_alias_or_version_names_its_place_and_what_exists(by_alias):
    with pytest.raises(ReferenceNotFound, match=r"mlops.yaml:9:14: .*no alias 'champion'.*@prod → fraud:1"):
        reconcile(by_alias, Actual(models={"fraud": RegisteredModel("fraud", {1: D1})}, aliases={"fraud": {"prod": 1}}))
    with pytest.raises(ReferenceNotFound, match=r"mlops.yaml:9:14: model version fraud:1 is not registered "
                                                r"\(registered: none\)$"):
        reconcile(by_alias, Actual(models={"fraud": RegisteredModel("fraud", {})}, aliases={"fraud": {"champion": 1}}))


K8S_SPEC = """\
version: 1
models:
  iris: {path: m, flavor: sklearn}
environments:
  sk: {python: "3.11"}
targets:
  cluster: {type: kubernetes, image_repository: registry.example.com/ml}
endpoints:
  web:
    target: cluster
    deployments:
      blue: {model: iris, environment: sk}
"""
K8S_ENV = image_ref("sk", ENV, "registry.example.com/ml")


@pytest.fixture
def k8s_spec(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.skops").write_text("x")
    (tmp_path / "mlops.yaml").write_text(K8S_SPEC)
    return load(tmp_path / "mlops.yaml")


def k8s_actual(spec, **overrides) -> Actual:
    """Version 1 (D1) of iris serves on the cluster from the pushed environment image."""
    endpoint = spec.endpoints["web"]
    values = dict(
        models={"iris": RegisteredModel("iris", {1: D1})}, model_contents={"iris": D1},
        environment_digests={"kubernetes": {"sk": ENV}}, environment_refs={"cluster": {"sk": K8S_ENV}},
        images=frozenset({K8S_ENV}), endpoints={"web": ObservedEndpoint("web", "cluster", traffic={"blue": 100})},
        deployments={"web/blue": ObservedDeployment(
            "web", "blue", "cluster", "iris:1", environment="sk", image=K8S_ENV, instance_count=1, ready_instances=1,
            settings_digest=settings_digest(endpoint, endpoint.deployments["blue"]))})
    values.update(overrides)
    return Actual(**values)


def test_kubernetes_deploys_register_build_deploy_with_model_layer_then_traffic(k8s_spec):
    actual = Actual(model_contents={"iris": D1}, environment_digests={"kubernetes": {"sk": ENV}},
                    environment_refs={"cluster": {"sk": K8S_ENV}})
    plan = reconcile(k8s_spec, actual)
    assert kinds(plan) == ["register:iris", f"build:{K8S_ENV}", "endpoint:web", "deploy:web/blue", "traffic:web"]
    build, deploy = plan.steps[1], plan.steps[3]
    assert build.data.repository == "registry.example.com/ml" and build.data.target_type == "kubernetes"
    assert deploy.depends_on == ("register:iris", f"build:{K8S_ENV}", "endpoint:web")
    assert deploy.after["image"] == K8S_ENV and deploy.data.image == K8S_ENV
    assert "thin layer at /var/lib/mlops/model on " + K8S_ENV in deploy.reason


def test_kubernetes_model_only_change_builds_no_environment(k8s_spec):
    assert reconcile(k8s_spec, k8s_actual(k8s_spec)).steps == ()
    plan = reconcile(k8s_spec, k8s_actual(k8s_spec, model_contents={"iris": D2}))
    assert kinds(plan) == ["register:iris", "update:web/blue"]
    update = plan.steps[1]
    assert update.before == {"model": "iris:1"} and update.after == {"model": "iris:2"}
    assert update.depends_on == ("register:iris",) and update.data.image == K8S_ENV
    assert "thin layer" in update.reason and "build" not in {s.kind for s in plan.steps}


ROLLING = SPEC.replace("      green: {model: iris}\n",
                       "      green:\n        model: iris\n        rollout: {steps: [5, 50], interval: 30s}\n")


@pytest.fixture
def rolling(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.skops").write_text("x")
    path = tmp_path / "mlops.yaml"
    path.write_text(ROLLING)
    return load(path)


def test_an_update_of_a_live_deployment_with_a_rollout_carries_its_schedule(rolling):
    plan = reconcile(rolling, converged(rolling, model_contents={"iris": D2}))
    update = next(s for s in plan.steps if s.id == "update:web/green")
    assert update.data.rollout["weights"] == [5, 50]
    assert "rollout: 5% →(30s) 50% →(30s) promote" in render_text(plan)
    assert "  - rollout: 5% →(30s) 50% →(30s) promote" in render_markdown(plan)
    assert Plan.from_json(plan.to_json()).to_json() == plan.to_json()


def test_a_canary_left_by_a_rollout_waits_for_it_or_is_deleted_when_none_is_planned(rolling):
    canary = observed(rolling, "web/green", "iris:2", name="green-canary")
    actual = converged(rolling, model_contents={"iris": D2},
                       deployments={**converged(rolling).deployments, "web/green-canary": canary})
    assert not [s for s in reconcile(rolling, actual).steps if "green-canary" in s.id]
    settled = converged(rolling, deployments={**converged(rolling).deployments, "web/green-canary": canary})
    assert "delete:web/green-canary" in kinds(reconcile(rolling, settled))
