"""Edge targets in the pure planner: a deployment is an export step, unchanged bundles plan nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.builders import image_ref
from pipeline.plan import Plan, reconcile, render_text
from pipeline.spec.loader import load
from pipeline.state import STOPPED, Actual, ObservedDeployment, ObservedEndpoint, RegisteredModel

SPEC = """\
version: 1
models:
  iris: {path: m, flavor: sklearn}
environments:
  sk: {python: "3.11"}
targets:
  devices: {type: edge, output: dist/edge, image_repository: registry.example.com/edge}
endpoints:
  iris:
    target: devices
    deployments:
      field: {model: iris, environment: sk}
      lab: {model: "iris:1", environment: sk}
"""
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
ENV = "sha256:" + "e" * 64
IMAGE = image_ref("sk", ENV)  # no repository: an edge target pushes bundles, not environments


@pytest.fixture
def spec(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.skops").write_text("x")
    (tmp_path / "mlops.yaml").write_text(SPEC)
    return load(tmp_path / "mlops.yaml")


def bundle(name: str, model: str = "iris:1", **changes) -> ObservedDeployment:
    values = dict(endpoint="iris", name=name, target="devices", model=model, environment="sk", image=IMAGE,
                  ready_instances=1, settings_digest="oci-archive")
    return ObservedDeployment(**{**values, **changes})


def actual(content: str = D1, **deployments: ObservedDeployment) -> Actual:
    return Actual(models={"iris": RegisteredModel("iris", {1: D1})}, model_contents={"iris": content},
                  environment_digests={"edge": {"sk": ENV}}, environment_refs={"devices": {"sk": IMAGE}},
                  images=frozenset({IMAGE}), endpoints={"iris": ObservedEndpoint("iris", "devices")},
                  deployments={f"iris/{k}": v for k, v in deployments.items()})


def test_the_edge_target_is_parsed_with_its_defaults(spec):
    target = spec.targets["devices"]
    assert (target.output, target.format, target.kind.exports) == ("dist/edge", "oci-archive", True)
    assert target.environment_repository is None and target.image_repository == "registry.example.com/edge"
    assert target.bundle_folder("iris", "field") == "dist/edge/iris-field"


def test_new_bundles_are_export_steps_without_endpoint_or_traffic(spec):
    nothing_written = actual()
    plan = reconcile(spec, Actual(**{**nothing_written.__dict__, "endpoints": {}, "deployments": {}}))
    assert [s.id for s in plan.steps] == ["export:iris/field", "export:iris/lab"]
    assert plan.steps[0].reason == "new bundle of iris:1 → dist/edge/iris-field"
    assert plan.steps[0].after == {"model": "iris:1", "image": IMAGE, "format": "oci-archive"}
    assert "+ export   deployment.iris/field" in render_text(plan)
    assert Plan.from_json(plan.to_json()).steps == plan.steps  # a saved plan with export steps applies


def test_unchanged_bundles_plan_nothing(spec):
    assert not reconcile(spec, actual(field=bundle("field"), lab=bundle("lab"))).steps


def test_a_model_change_rewrites_only_the_bundle_that_follows_the_content(spec):
    plan = reconcile(spec, actual(D2, field=bundle("field"), lab=bundle("lab")))
    assert [s.id for s in plan.steps] == ["register:iris", "export:iris/field"]
    step = plan.steps[1]
    assert step.action == "replace" and step.before == {"model": "iris:1"} and step.after == {"model": "iris:2"}
    assert step.reason == "rewrite dist/edge/iris-field: model iris:1 → iris:2"
    assert step.depends_on == ("register:iris",)


def test_a_format_change_or_a_damaged_bundle_rewrites_it(spec):
    plan = reconcile(spec, actual(field=bundle("field", settings_digest="docker-archive"),
                                  lab=bundle("lab", status=STOPPED, ready_instances=0)))
    assert [(s.id, s.before) for s in plan.steps] == [("export:iris/field", {"format": "docker-archive"}),
                                                       ("export:iris/lab", {"status": STOPPED})]
    assert "its files are missing or changed outside mlops" in plan.steps[1].reason


def test_a_bundle_removed_from_the_file_is_deleted_with_prune(spec):
    plan = reconcile(spec, actual(field=bundle("field"), lab=bundle("lab"), old=bundle("old")), prune=True)
    assert [s.id for s in plan.steps] == ["delete:iris/old"]
