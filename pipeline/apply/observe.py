"""The actual state: what the registry holds, what the working tree contains, what runs on each target.

Observing is read-only and goes through the protocols only (``Registry``, ``Target``, a builder's
``observe``), so the planner gets plain ``Actual`` values and the service can record what serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from pipeline.gcpause import collector_paused
from pipeline.registry.hashing import working_tree_digest
from pipeline.spec.model import ModelRef, Spec
from pipeline.state import Actual, RegisteredModel
from pipeline.targets.base import Target


def spec_digest(spec: Spec, path: Path) -> str:
    """Fingerprint of mlops.yaml as written (a saved plan is refused once the file changes)."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def used_targets(spec: Spec) -> set[str]:
    return {endpoint.target for endpoint in spec.endpoints.values()}


def observe(spec: Spec, registry, targets: Mapping[str, Target], builder=None) -> Actual:
    """Read the registry, the model files in the working tree and every target in use."""
    with collector_paused():
        return _observe(spec, registry, targets, builder)


def _observe(spec: Spec, registry, targets: Mapping[str, Target], builder) -> Actual:
    references = [d.model for d in spec.deployments() if d.model.registry_only]
    held = registry.versions_by_name(set(spec.models) | {ref.name for ref in references})
    models = {name: RegisteredModel(name, {v.version: v.digest for v in versions},
                                    spec.models[name].flavor if name in spec.models else None)
              for name, versions in held.items()}
    cache_dir = spec.registry_path()  # resolves a path: once, not once per model
    contents = {model.name: working_tree_digest(spec.root / model.path, cache_dir).digest
                for model in spec.models.values()}
    aliases = {name: dict(registry.aliases(name)) for name in sorted({r.name for r in references if r.alias})}
    endpoints, deployments = {}, {}
    for name in sorted(used_targets(spec) & set(targets)):
        seen_endpoints, seen_deployments = targets[name].observe()
        endpoints.update({e.name: e for e in seen_endpoints})
        deployments.update({d.key: d for d in seen_deployments})
    environment_digests: dict = {}
    environment_refs: dict = {}
    images: frozenset[str] = frozenset()
    if builder is not None:
        environment_digests, environment_refs, images = builder.observe(spec)
    return Actual(models=models, model_contents=contents, environment_digests=environment_digests,
                  environment_refs=environment_refs,
                  images=images, aliases=aliases, endpoints=endpoints, deployments=deployments)


def served(spec: Spec, targets: Mapping[str, Target]) -> dict[str, dict]:
    """What each deployment serves now: model version, image, traffic and mirror percentages."""
    result = {}
    for name in sorted(used_targets(spec) & set(targets)):
        endpoints, deployments = targets[name].observe()
        traffic = {e.name: (e.traffic, e.mirror_traffic) for e in endpoints}
        for deployment in deployments:
            live, mirror = traffic.get(deployment.endpoint, ({}, {}))
            result[deployment.key] = {"target": name, "model": deployment.model, "image": deployment.image,
                                      "status": deployment.status, "traffic": live.get(deployment.name, 0),
                                      "mirror": mirror.get(deployment.name, 0)}
            if deployment.detail.get("pinned_image"):  # what the pods pull (a model image by digest)
                result[deployment.key]["pinned_image"] = deployment.detail["pinned_image"]
    return result


def record_usage(registry, serving: dict[str, dict]) -> None:
    """Tell the registry which versions live deployments use (they cannot be deleted)."""
    usage = {}
    for key, state in serving.items():
        ref = ModelRef.parse(state["model"])
        usage[key] = (ref.name, ref.version)
    registry.set_usage(usage)
