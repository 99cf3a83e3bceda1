"""Rules of mlops.yaml that a JSON Schema cannot say: names, references, traffic, paths, secrets.

Each check reads the parsed data without the values the schema rejected, and yields (position,
message), so that every mistake of a file is reported at once.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.spec.model import ModelRef, cpu_cores
from pipeline.spec.rollout import DRIFT_METRICS, canary_name, parse_duration, parse_limit
from pipeline.spec.rollout import METRICS as METRIC_NAMES
from pipeline.spec.schema import did_you_mean, dotted
from pipeline.spec.target_kinds import TARGET_KINDS
from pipeline.spec.yamlsource import Source

Found = Iterator[tuple[tuple[int, int], str]]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_NAME = re.compile(
    r"(passw(or)?d|secret|token|api[_-]?key|access[_-]?key|credential|private[_-]?key|auth)", re.I)
# Shapes of well-known credentials: refused as literals anywhere a value is given.
_CREDENTIAL = re.compile(
    r"(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)")
# user:password@ in a URL (the password part is checked once ${VAR} references are taken out)
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:([^/?#@\s]*)@")
MAX_MIRROR = 50


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def check(source: Source, root: Path, accepted: Any) -> Found:
    """Problems of ``accepted``: the parsed data where values the schema rejected are ``REJECTED``
    (already reported), so that a wrong type is reported once and never breaks a check."""
    data = _mapping(accepted)
    yield from _names(source, data)
    yield from _references(source, data)
    yield from _traffic(source, data)
    yield from _paths(source, data, root)
    yield from _environments(source, data)
    yield from _drift(source, data)
    yield from _secrets(source, data)
    yield from _routing(source, data)
    yield from _edge(source, data)
    yield from _scaling(source, data)
    yield from _rollouts(source, data)
    registry = data.get("registry")
    if isinstance(registry, str) and "://" in registry:
        yield (source.at(("registry",)),
               f"registry: '{registry}' is a URI; a registry is the embedded registry's folder (like "
               ".mlops/registry) or an MLflow tracking server: {type: mlflow, tracking_uri: ${MLFLOW_TRACKING_URI}}")


def _names(source: Source, data: dict) -> Found:
    def bad(path: tuple, name: str):
        if not DNS_LABEL.match(name) or len(name) > 63:
            yield (source.at(path, key=True),
                   f"{dotted(path)}: '{name}' is not a valid name; use lowercase letters, digits and "
                   "'-' (a DNS-1123 label, at most 63 characters, starting and ending with a letter or "
                   "digit) because it becomes a container and Kubernetes name")

    for section in ("models", "environments", "targets", "endpoints"):
        for name in _mapping(data.get(section)):
            yield from bad((section, name), name)
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        for deployment in _mapping(_mapping(spec).get("deployments")):
            yield from bad(("endpoints", endpoint, "deployments", deployment), deployment)


def _unknown(source: Source, path: tuple, kind: str, name: str, known) -> tuple[tuple[int, int], str]:
    hint = did_you_mean(name, known) or (
        f" (defined: {', '.join(sorted(known))})" if known else f" (no {kind}s are defined)")
    return (source.at(path), f"{dotted(path)}: unknown {kind} '{name}'{hint}")


def _references(source: Source, data: dict) -> Found:
    models = _mapping(data.get("models"))
    environments = _mapping(data.get("environments"))
    targets = _mapping(data.get("targets"))
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        spec = _mapping(spec)
        target = spec.get("target")
        target_type = _mapping(targets.get(target)).get("type")
        if isinstance(target, str) and target not in targets:
            yield _unknown(source, ("endpoints", endpoint, "target"), "target", target, targets)
        for name, deployment in _mapping(spec.get("deployments")).items():
            deployment = _mapping(deployment)
            base = ("endpoints", endpoint, "deployments", name)
            ref = deployment.get("model")
            if isinstance(ref, str):
                try:
                    parsed = ModelRef.parse(ref)
                    model = None if parsed.registry_only else parsed.name  # models:/ needs no declaration
                except ValueError:
                    model = None  # the schema reports the format
                if model and model not in models:
                    yield _unknown(source, base + ("model",), "model", model, models)
            environment = deployment.get("environment")
            if isinstance(environment, str) and environment not in environments:
                yield _unknown(source, base + ("environment",), "environment", environment, environments)
            kind = TARGET_KINDS.get(target_type) if isinstance(target_type, str) else None
            if environment is None and kind is not None and kind.needs_environment:
                yield (source.at(base, key=True),
                       f"{dotted(base)}: needs an 'environment' because target '{target}' is "
                       f"{target_type} (an image is built from it)")


def _exports(data: dict, endpoint_spec: Any) -> bool:
    """Whether the endpoint's target writes bundles (edge): its deployments serve no traffic here."""
    target_type = _mapping(_mapping(data.get("targets")).get(_mapping(endpoint_spec).get("target"))).get("type")
    kind = TARGET_KINDS.get(target_type) if isinstance(target_type, str) else None
    return kind is not None and kind.exports


def _traffic(source: Source, data: dict) -> Found:
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        if _exports(data, spec):
            continue  # _edge says why traffic has no meaning there
        spec = _mapping(spec)
        deployments = _mapping(spec.get("deployments"))
        base = ("endpoints", endpoint)
        live = _mapping(spec.get("traffic"))
        mirror = _mapping(spec.get("mirror_traffic"))
        for field, table, limit in (("traffic", live, 100), ("mirror_traffic", mirror, MAX_MIRROR)):
            for name, percent in table.items():
                path = base + (field, name)
                if name not in deployments:
                    yield _unknown(source, path, "deployment", name, deployments)
                if isinstance(percent, int) and not isinstance(percent, bool) and not 0 <= percent <= limit:
                    why = " (a mirror copies at most 50% of requests)" if field == "mirror_traffic" else ""
                    yield (source.at(path), f"{dotted(path)}: {percent} must be between 0 and {limit}{why}")
        values = [v for v in live.values() if isinstance(v, int) and not isinstance(v, bool)]
        if "traffic" in spec and len(values) == len(live) and sum(values) not in (0, 100):
            yield (source.at(base + ("traffic",)),
                   f"{dotted(base + ('traffic',))}: percentages add up to {sum(values)}; they must add up "
                   "to 100 (or all be 0 to send no traffic)")
        if "traffic" not in spec and len(deployments) > 1:
            yield (source.at(base, key=True),
                   f"{dotted(base)}: has {len(deployments)} deployments but no 'traffic'; say how requests "
                   f"are split, like traffic: {{{', '.join(f'{d}: ...' for d in deployments)}}}")
        for name, percent in mirror.items():
            if percent and live.get(name):
                yield (source.at(base + ("mirror_traffic", name)),
                       f"{dotted(base + ('mirror_traffic', name))}: '{name}' receives live traffic "
                       f"({live[name]}%); a deployment is either live or a mirror, not both")
        mirrored = [v for v in mirror.values() if isinstance(v, int) and not isinstance(v, bool)]
        if sum(mirrored) > MAX_MIRROR and all(0 <= v <= MAX_MIRROR for v in mirrored):
            yield (source.at(base + ("mirror_traffic",)),
                   f"{dotted(base + ('mirror_traffic',))}: mirrors add up to {sum(mirrored)}%; at most "
                   f"{MAX_MIRROR}% of requests can be mirrored")


def _path_fields(data: dict) -> Iterator[tuple[tuple, str, bool | None]]:
    """(path in the file, the path value, whether it must be a file; None: it need not exist yet) for every
    path field."""
    for name, model in _mapping(data.get("models")).items():
        for field, must_be_file in (("path", False), ("baseline", True)):
            value = _mapping(model).get(field)
            if isinstance(value, str):
                yield ("models", name, field), value, must_be_file
    for name, env in _mapping(data.get("environments")).items():
        for field in ("requirements", "conda_file", "dockerfile"):
            value = _mapping(env).get(field)
            if isinstance(value, str):
                yield ("environments", name, field), value, True
    for name, target in _mapping(data.get("targets")).items():
        value = _mapping(target).get("output")
        if isinstance(value, str):
            yield ("targets", name, "output"), value, None  # written by apply


class _RealPaths:
    """``Path.resolve()`` and the kind of what is there, resolving each folder once: a file with
    10,000 models names 10,000 paths under one folder, and ``resolve`` stats every part of each."""

    def __init__(self) -> None:
        self._folders: dict[Path, Path] = {}

    def folder(self, path: Path) -> Path:
        if path not in self._folders:
            self._folders[path] = path.resolve()
        return self._folders[path]

    def resolve(self, path: Path) -> tuple[Path, int | None]:
        """(the real path, its st_mode or None when nothing is there)."""
        try:
            mode: int | None = path.lstat().st_mode
        except OSError:
            mode = None
        if (mode is not None and stat.S_ISLNK(mode)) or path.parent == path:
            real = path.resolve()
            try:
                return real, real.stat().st_mode
            except OSError:
                return real, None
        return self.folder(path.parent) / path.name, mode


def _paths(source: Source, data: dict, root: Path) -> Found:
    top = root.resolve()
    real_paths = _RealPaths()
    for path, value, must_be_file in _path_fields(data):
        where = source.at(path)
        here = dotted(path)
        relative = Path(value)
        if relative.is_absolute():
            yield where, f"{here}: '{value}' is absolute; use a path relative to the folder of mlops.yaml"
            continue
        if ".." in relative.parts:
            yield where, f"{here}: '{value}' contains '..'; paths must stay inside the repository"
            continue
        real, mode = real_paths.resolve(root / relative)
        if not real.is_relative_to(top):
            yield where, f"{here}: '{value}' goes through a symlink that points outside the repository"
        elif must_be_file is None:
            continue
        elif mode is None:
            yield where, f"{here}: '{value}' does not exist (relative to the folder of {source.file})"
        elif must_be_file and not stat.S_ISREG(mode):
            yield where, f"{here}: '{value}' is a folder; a file is expected"


def _environments(source: Source, data: dict) -> Found:
    for name, env in _mapping(data.get("environments")).items():
        env = _mapping(env)
        given = [f for f in ("requirements", "conda_file", "dockerfile") if f in env]
        if len(given) > 1:
            path = ("environments", name, given[1])
            yield (source.at(path, key=True),
                   f"{dotted(path)}: give only one of requirements, conda_file or dockerfile "
                   f"(found {' and '.join(given)})")
        if "dockerfile" in env and "base_image" in env:
            path = ("environments", name, "base_image")
            yield (source.at(path, key=True),
                   f"{dotted(path)}: a dockerfile sets its own base image (FROM); remove base_image")


def _drift(source: Source, data: dict) -> Found:
    for name, model in _mapping(data.get("models")).items():
        drift = _mapping(_mapping(model).get("drift"))
        moderate, significant = drift.get("psi_moderate", 0.1), drift.get("psi_significant", 0.25)
        if isinstance(moderate, int | float) and isinstance(significant, int | float) and moderate > significant:
            path = ("models", name, "drift", "psi_moderate" if "psi_moderate" in drift else "psi_significant")
            yield (source.at(path),
                   f"{dotted(path)}: psi_moderate ({moderate:g}) must not exceed psi_significant ({significant:g})")


def _secret_fields(data: dict) -> Iterator[tuple[tuple, str, Any]]:
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        for name, deployment in _mapping(_mapping(spec).get("deployments")).items():
            variables = _mapping(_mapping(deployment).get("environment_variables"))
            for key, value in variables.items():
                yield ("endpoints", endpoint, "deployments", name, "environment_variables", key), key, value
    for name, target in _mapping(data.get("targets")).items():
        for key, value in _mapping(_mapping(target).get("settings")).items():
            yield ("targets", name, "settings", key), key, value


def _secrets(source: Source, data: dict) -> Found:
    for path, key, value in _secret_fields(data):
        if isinstance(value, bool | int | float):
            value = str(value)  # a number is as much a literal secret as text
        if not isinstance(value, str):
            continue
        here = dotted(path)
        leftover = VAR_REF.sub("", value)
        if "${" in leftover:
            yield (source.at(path),
                   f"{here}: malformed variable reference; write ${{NAME}} with letters, digits and '_'")
        elif _CREDENTIAL.search(value):
            yield (source.at(path),
                   f"{here}: the value looks like a credential; never commit secrets, "
                   f"reference an environment variable instead, like ${{{key.upper()}}}")
        elif any(VAR_REF.sub("", m.group(1)) for m in _URL_PASSWORD.finditer(value)):
            yield (source.at(path),
                   f"{here}: the URL holds a password; write user and password as environment variable "
                   "references, like postgres://${DB_USER}:${DB_PASS}@host/db")
        elif _SECRET_NAME.search(key) and leftover.strip():
            yield (source.at(path),
                   f"{here}: '{key}' holds a secret, so its value must be an environment variable "
                   f"reference like ${{{key.upper()}}}, not a literal (resolved when applied, never printed)")


def _routing(source: Source, data: dict) -> Found:
    for name, target in _mapping(data.get("targets")).items():
        target = _mapping(target)
        kubernetes = target.get("type") == "kubernetes"
        for field in ("routing", "gateway", "collection"):
            if field in target and not kubernetes:
                path = ("targets", name, field)
                yield (source.at(path, key=True),
                       f"{dotted(path)}: only a kubernetes target has '{field}' (this one is {target.get('type')})")
        if kubernetes and "gateway" in target and target.get("routing", "router") == "router":
            path = ("targets", name, "gateway")
            yield (source.at(path, key=True),
                   f"{dotted(path)}: is used only with 'routing: gateway' (this target uses the mlops router)")


def _edge(source: Source, data: dict) -> Found:
    """edge targets write bundles for devices: they need a folder, and their endpoints split no traffic."""
    for name, target in _mapping(data.get("targets")).items():
        target = _mapping(target)
        edge = target.get("type") == "edge"
        if edge and "output" not in target:
            yield (source.at(("targets", name), key=True),
                   f"targets.{name}: an edge target needs 'output', the folder (relative to the folder of "
                   f"{source.file}) its bundles are written to, like output: dist/edge")
        for field in ("output", "format"):
            if field in target and not edge and "type" in target:
                path = ("targets", name, field)
                yield (source.at(path, key=True),
                       f"{dotted(path)}: only an edge target has '{field}' (this one is {target.get('type')})")
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        if not _exports(data, spec):
            continue
        spec = _mapping(spec)
        for field in ("traffic", "mirror_traffic"):
            if field in spec:
                path = ("endpoints", endpoint, field)
                yield (source.at(path, key=True),
                       f"{dotted(path)}: endpoint '{endpoint}' is on edge target '{spec.get('target')}', which "
                       "writes one bundle per deployment for devices to run; nothing routes requests between "
                       f"them, so remove '{field}'")
        for name, deployment in _mapping(spec.get("deployments")).items():
            if "environment_variables" in _mapping(deployment):
                where = ("endpoints", endpoint, "deployments", name, "environment_variables")
                yield (source.at(where, key=True),
                       f"{dotted(where)}: a bundle bakes in no variables (they could be secrets); set them on the "
                       "device, in the runner's manifest (docker-compose.yaml, IoT Edge, Greengrass)")
        if spec.get("auth_mode") == "none":
            auth = ("endpoints", endpoint, "auth_mode")
            yield (source.at(auth),
                   f"{dotted(auth)}: an edge bundle's keys come from the device (MLOPS_PRIMARY_KEY); serving "
                   "without keys is the device's choice (MLOPS_AUTH=none), never baked in: remove auth_mode")


_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|k|m|g)?$")
_UNITS = {None: 1, "k": 1000, "m": 1000**2, "g": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _amount(field: str, value: Any) -> float | None:
    """A comparable amount of a quantity the schema accepted, or None."""
    if field == "cpu" and isinstance(value, int | float | str) and not isinstance(value, bool):
        return cpu_cores(value)
    match = _MEMORY.match(value) if field == "memory" and isinstance(value, str) else None
    return int(match.group(1)) * _UNITS[match.group(2)] if match else None


def _scaling(source: Source, data: dict) -> Found:
    targets = _mapping(data.get("targets"))
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        target_type = _mapping(targets.get(_mapping(spec).get("target"))).get("type")
        for name, deployment in _mapping(_mapping(spec).get("deployments")).items():
            base = ("endpoints", endpoint, "deployments", name)
            deployment = _mapping(deployment)
            resources = _mapping(deployment.get("resources"))
            yield from _resources(source, base + ("resources",), resources)
            scale = _mapping(deployment.get("scale_settings"))
            path = base + ("scale_settings",)
            kind = scale.get("type", "default")
            if kind == "default":
                for field in ("min_instances", "max_instances", "target_utilization_percentage"):
                    if field in scale:
                        yield (source.at(path + (field,), key=True),
                               f"{dotted(path + (field,))}: applies only with 'type: target_utilization'")
            if kind != "target_utilization":
                continue
            if target_type in ("local", "docker", "edge"):
                yield (source.at(path + ("type",)),
                       f"{dotted(path + ('type',))}: a {target_type} target cannot autoscale; use a kubernetes "
                       "target or a fixed instance_count")
            low, high = scale.get("min_instances", 1), scale.get("max_instances")
            if isinstance(low, int) and isinstance(high, int) and low > high:
                yield (source.at(path + ("min_instances",)),
                       f"{dotted(path + ('min_instances',))}: {low} is more than max_instances ({high})")
            if "cpu" not in resources and "cpu" not in _mapping(resources.get("requests")):
                yield (source.at(path, key=True),
                       f"{dotted(path)}: autoscaling on CPU use needs the CPU each instance requests; "
                       "set resources.cpu or resources.requests.cpu")


def _resources(source: Source, path: tuple, resources: dict) -> Found:
    simple = [f for f in ("cpu", "memory") if f in resources]
    split = [f for f in ("requests", "limits") if f in resources]
    if simple and split:
        where = path + (split[0],)
        yield (source.at(where, key=True),
               f"{dotted(where)}: give either {' and '.join(simple)} (both the request and the limit) or "
               "requests and limits, not both")
        return
    requests, limits = _mapping(resources.get("requests")), _mapping(resources.get("limits"))
    for field in ("cpu", "memory"):
        wanted, most = _amount(field, requests.get(field)), _amount(field, limits.get(field))
        if wanted is not None and most is not None and wanted > most:
            where = path + ("requests", field)
            yield (source.at(where),
                   f"{dotted(where)}: {requests[field]} is more than the limit ({limits[field]})")


def _rollouts(source: Source, data: dict) -> Found:
    """What a ``rollout:`` block needs beyond its types: weights that fit its strategy and rise, limits
    in the unit of their metric, a deadline longer than a step, collected data for the drift gates."""
    models = _mapping(data.get("models"))
    targets = _mapping(data.get("targets"))
    for endpoint, spec in _mapping(data.get("endpoints")).items():
        deployments = _mapping(_mapping(spec).get("deployments"))
        target_type = _mapping(targets.get(_mapping(spec).get("target"))).get("type")
        kind = TARGET_KINDS.get(target_type) if isinstance(target_type, str) else None
        for name, deployment in deployments.items():
            deployment = _mapping(deployment)
            if "rollout" not in deployment:
                continue
            base = ("endpoints", endpoint, "deployments", name, "rollout")
            rollout = _mapping(deployment.get("rollout"))
            strategy = rollout.get("strategy", "canary")
            if canary_name(name) in deployments:
                yield (source.at(base, key=True),
                       f"{dotted(base)}: the canary of '{name}' runs as '{canary_name(name)}', which is "
                       "another deployment of this endpoint; rename one of them")
            fields = {"canary": ("steps",), "linear": ("step_weight", "max_weight"), "all_at_once": ()}
            for other, names in fields.items():
                for field in names:
                    if field in rollout and other != strategy:
                        yield (source.at(base + (field,), key=True),
                               f"{dotted(base + (field,))}: applies only with 'strategy: {other}' "
                               f"(this rollout is {strategy})")
            steps = rollout.get("steps")
            if strategy == "canary" and "steps" not in rollout:
                yield (source.at(base, key=True), f"{dotted(base)}: a canary needs 'steps', the canary's weights "
                                                  "in percent, like steps: [5, 25, 50, 100]")
            if isinstance(steps, list) and all(isinstance(w, int) for w in steps) \
                    and any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
                yield (source.at(base + ("steps",)),
                       f"{dotted(base + ('steps',))}: {steps} must rise from step to step")
            if strategy == "linear":
                weight, most = rollout.get("step_weight"), rollout.get("max_weight", 100)
                if weight is None:
                    yield (source.at(base, key=True),
                           f"{dotted(base)}: a linear rollout needs 'step_weight' (the weight added per step)")
                elif isinstance(weight, int) and isinstance(most, int) and weight > most:
                    yield (source.at(base + ("step_weight",)),
                           f"{dotted(base + ('step_weight',))}: {weight} is more than max_weight ({most})")
            yield from _rollout_times(source, base, rollout)
            yield from _gates(source, base, rollout, deployment, models,
                              remote=kind is not None and kind.remote_collection)


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _rollout_times(source: Source, base: tuple, rollout: dict) -> Found:
    interval = _seconds(rollout.get("interval", "1m"))
    deadline = _seconds(rollout.get("progress_deadline", "10m"))
    for field in ("interval", "progress_deadline", "mirror_first"):
        if _seconds(rollout.get(field)) == 0:
            yield (source.at(base + (field,)), f"{dotted(base + (field,))}: must be longer than 0")
    if interval and deadline is not None and deadline < interval:
        where = base + ("progress_deadline",) if "progress_deadline" in rollout else base
        yield (source.at(where, key="progress_deadline" not in rollout),
               f"{dotted(base + ('progress_deadline',))}: {rollout.get('progress_deadline', '10m')} is shorter "
               f"than the interval ({rollout.get('interval', '1m')}); a step could never be judged")


def _gates(source: Source, base: tuple, rollout: dict, deployment: dict, models: dict, remote: bool) -> Found:
    metrics = _mapping(rollout.get("analysis")).get("metrics")
    seen: set[str] = set()
    for index, gate in enumerate(metrics if isinstance(metrics, list) else []):
        gate = _mapping(gate)
        name, limit = gate.get("name"), gate.get("max")
        path = base + ("analysis", "metrics", index)
        if not isinstance(name, str) or name not in METRIC_NAMES:
            continue
        if name in seen:
            yield (source.at(path + ("name",)), f"{dotted(path + ('name',))}: '{name}' is already gated above")
        seen.add(name)
        if isinstance(limit, str | int | float) and not isinstance(limit, bool):
            try:
                parse_limit(name, limit)
            except ValueError as error:
                yield (source.at(path + ("max",)), f"{dotted(path + ('max',))}: {error} for {name}")
        collector = deployment.get("data_collector")
        if name in DRIFT_METRICS and remote:
            yield (source.at(path + ("name",)),
                   f"{dotted(path + ('name',))}: {name} reads the data collected on this machine; this target "
                   "collects into its own sink, which rollouts cannot read yet")
        elif name in DRIFT_METRICS and (collector is None or _mapping(collector).get("enabled") is False):
            yield (source.at(path + ("name",)),
                   f"{dotted(path + ('name',))}: {name} is read from the collected data; give the deployment "
                   "a data_collector")
        model = ModelRef.parse(deployment["model"]).name if isinstance(deployment.get("model"), str) else None
        if name == "input_drift" and model in models and not _mapping(models[model]).get("baseline"):
            yield (source.at(path + ("name",)),
                   f"{dotted(path + ('name',))}: input_drift compares with the model's baseline; model "
                   f"'{model}' has none (models.{model}.baseline)")
