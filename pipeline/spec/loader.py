"""Load mlops.yaml: YAML (with positions) → JSON Schema → semantic checks → frozen dataclasses.

Every problem of the file is collected and raised at once as one ``SpecError``, sorted by line.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from pipeline.errors import Problem, SpecError
from pipeline.gcpause import collector_paused
from pipeline.spec import checks, rollout, schema
from pipeline.spec.model import (
    CollectionStorage,
    DataCollector,
    Deployment,
    Endpoint,
    Environment,
    GatewayRef,
    Model,
    ModelRef,
    Probe,
    RegistryConfig,
    RequestSettings,
    ResourceAmounts,
    Resources,
    ScaleSettings,
    Spec,
    Target,
)
from pipeline.spec.yamlsource import MAX_BYTES, Source, read

DEFAULT_REGISTRY = ".mlops/registry"


def load(path: Path, text: str | bytes | None = None, name: str | None = None) -> Spec:
    """Read and validate a spec file. ``text`` overrides the file's content (e.g. from a git ref);
    paths in it are still checked against the folder of ``path``."""
    path = Path(path)
    name = name or str(path)
    if text is None:
        try:
            with path.open("rb") as file:
                text = file.read(MAX_BYTES + 1)  # enough to refuse a larger file without reading it all
        except FileNotFoundError:
            raise SpecError([Problem(name, 0, 0, "file not found; create one with `mlops init` "
                                                 "or point to it with --file")]) from None
        except OSError as error:
            raise SpecError([Problem(name, 0, 0, f"cannot read the file: {error}")]) from None
    with collector_paused():
        return _load(source=read(text, name), path=path, name=name)


def _load(source: Source, path: Path, name: str) -> Spec:
    found = list(source.problems)
    if not found:
        if source.data is None:
            found.append(((1, 1), "the file is empty; it needs at least 'version: 1'"))
        elif not isinstance(source.data, dict):
            found.append(((1, 1), "the top level must be a mapping of keys like version, models, endpoints"))
        else:
            problems, accepted = schema.validate(source)
            found.extend(problems)
            found.extend(checks.check(source, path.parent, accepted))
    if found:
        raise SpecError([Problem(name, line, column, message) for (line, column), message in found])
    return _build(source, path.parent, name)


@functools.cache
def _field_names(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _fields(cls, raw: dict | None, **extra) -> Any:
    """Construct a settings dataclass from a mapping whose keys the schema already checked."""
    known = _field_names(cls)
    return cls(**{**{k: v for k, v in (raw or {}).items() if k in known}, **extra})


def _build(source: Source, root: Path, name: str) -> Spec:
    data = source.data
    models = {n: _fields(Model, m, name=n, tags=dict(m.get("tags", {})))
              for n, m in (data.get("models") or {}).items()}
    environments = {n: _fields(Environment, e, name=n) for n, e in (data.get("environments") or {}).items()}
    targets = {n: _fields(Target, t, name=n, settings={k: str(v) for k, v in t.get("settings", {}).items()},
                          gateway=_fields(GatewayRef, t["gateway"]) if t.get("gateway") else None,
                          collection=_fields(CollectionStorage, t.get("collection")))
               for n, t in (data.get("targets") or {}).items()}
    endpoints = {n: _endpoint(n, e) for n, e in (data.get("endpoints") or {}).items()}
    values = {".".join(str(p) for p in path): where for path, where in source.values.items()}
    positions = {**values, **{".".join(str(p) for p in path): where for path, where in source.keys.items()}}
    return Spec(
        root=root.resolve(),
        file=name,
        version=data["version"],
        registry=_registry(data.get("registry", DEFAULT_REGISTRY)),
        prune=bool(data.get("prune", False)),
        models=models,
        environments=environments,
        targets=targets,
        endpoints=endpoints,
        positions=positions,
        value_positions=values,
    )


def _registry(raw: str | dict) -> RegistryConfig:
    if isinstance(raw, str):
        return RegistryConfig(path=raw)
    return _fields(RegistryConfig, raw)


def _endpoint(name: str, raw: dict) -> Endpoint:
    deployments = {d: _deployment(name, d, spec) for d, spec in raw["deployments"].items()}
    traffic = raw.get("traffic")
    if traffic is None:  # the checks allow this only for a single deployment
        traffic = {next(iter(deployments)): 100}
    return Endpoint(
        name=name,
        target=raw["target"],
        auth_mode=raw.get("auth_mode", "key"),
        traffic=dict(traffic),
        mirror_traffic={d: p for d, p in (raw.get("mirror_traffic") or {}).items() if p},
        deployments=deployments,
        description=raw.get("description", ""),
    )


def _deployment(endpoint: str, name: str, raw: dict) -> Deployment:
    collector = raw.get("data_collector")
    return Deployment(
        name=name,
        endpoint=endpoint,
        model=ModelRef.parse(raw["model"]),
        environment=raw.get("environment"),
        instance_count=raw.get("instance_count", 1),
        environment_variables={k: _text(v) for k, v in (raw.get("environment_variables") or {}).items()},
        request_settings=_fields(RequestSettings, raw.get("request_settings")),
        data_collector=(_fields(DataCollector, {"enabled": True, **collector})
                        if collector is not None else DataCollector()),
        liveness_probe=_fields(Probe, raw.get("liveness_probe")),
        readiness_probe=_fields(Probe, raw.get("readiness_probe")),
        resources=_resources(raw.get("resources") or {}),
        scale_settings=_fields(ScaleSettings, raw.get("scale_settings")),
        rollout=rollout.build(raw.get("rollout")),
    )


def _resources(raw: dict) -> Resources:
    return _fields(Resources, raw, requests=_fields(ResourceAmounts, raw.get("requests")),
                   limits=_fields(ResourceAmounts, raw.get("limits")))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
