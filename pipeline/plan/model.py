"""The plan as a value: ordered, typed steps plus the digests of what it was made against.

Like a Terraform plan it can be saved (``to_json``), reviewed, and applied later; apply refuses it
when ``spec_digest`` or ``state_digest`` no longer match. The JSON format is documented in
``docs/plan-format.md`` and versioned by ``format_version``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from pipeline.errors import MlopsError

FORMAT_VERSION = 1


class StepKind(StrEnum):
    REGISTER = "register"
    BUILD = "build"
    ENDPOINT = "endpoint"
    DEPLOY = "deploy"
    UPDATE = "update"
    EXPORT = "export"  # write (or rewrite) a deployment's bundle on an edge target
    TRAFFIC = "traffic"
    DELETE = "delete"
    KEEP = "keep"


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    NOOP = "noop"


# kind -> wave; steps run wave by wave, in plan order within a wave
WAVES = {"register": 1, "build": 2, "endpoint": 3, "deploy": 3, "update": 3, "export": 3, "traffic": 4, "delete": 5,
         "keep": 5}
WAVE_NAMES = {1: "register model versions", 2: "build environments (images, venvs)", 3: "deploy and update",
              4: "shift traffic", 5: "remove what the file no longer has"}
# action -> symbol, as Terraform shows them
SYMBOLS = {"create": "+", "update": "~", "replace": "±", "delete": "-", "noop": " "}


# What an unset compared field means; normalize() fills it in, so "unset" and "default" never differ.
FIELD_DEFAULTS: dict[str, Any] = {"traffic": {}, "mirror_traffic": {}, "auth_mode": "key", "instance_count": 1}
_WEIGHTS = ("traffic", "mirror_traffic")


def normalize(name: str, value: Any) -> Any:
    """The canonical form of a compared field, applied to desired and observed values alike."""
    if value is None:
        value = FIELD_DEFAULTS.get(name)
    if name in _WEIGHTS:  # a 0 % share is the same as no share
        return {key: weight for key, weight in sorted(value.items()) if weight}
    return value


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(field, old, new) for every field whose normalized values differ, by field name."""
    before, after = before or {}, after or {}
    pairs = ((key, normalize(key, before.get(key)), normalize(key, after.get(key)))
             for key in sorted(set(before) | set(after)))
    return [(key, old, new) for key, old, new in pairs if old != new]


@dataclass(frozen=True)
class RegisterData:
    model: str
    digest: str  # the content to register (the version is assigned when it is)


@dataclass(frozen=True)
class BuildData:
    environment: str
    image: str  # the image or venv reference the builder named
    digest: str  # the environment's build digest (refused at build time when it changed since)
    target_type: str
    repository: str | None = None
    base_image: str | None = None


@dataclass(frozen=True)
class EndpointData:
    endpoint: str
    target: str


@dataclass(frozen=True)
class DeployData:
    endpoint: str
    deployment: str
    target: str
    model_name: str
    model_version: int | None  # None: the version registered for model_digest by this plan
    model_digest: str
    image: str | None = None
    # an update that goes live progressively: Rollout.describe() (weights, interval, gates, schedule)
    rollout: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RemoveData:
    target: str
    endpoint: str
    deployment: str | None = None  # None: the whole endpoint


StepData = RegisterData | BuildData | EndpointData | DeployData | RemoveData
PAYLOADS: dict[str, type] = {"register": RegisterData, "build": BuildData, "endpoint": EndpointData,
                             "deploy": DeployData, "update": DeployData, "export": DeployData,
                             "traffic": EndpointData,
                             "delete": RemoveData, "keep": RemoveData}


@dataclass(frozen=True)
class Step:
    id: str  # stable, like "deploy:iris/blue"
    kind: StepKind
    action: Action
    address: str  # what it acts on, like "deployment.iris/blue"
    reason: str
    data: StepData  # what apply needs, typed by kind (PAYLOADS)
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    depends_on: tuple[str, ...] = ()

    @property
    def wave(self) -> int:
        return WAVES[self.kind]

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.action]


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    spec_digest: str
    state_digest: str
    created: str
    prune: bool = False
    target_filter: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != "noop"]

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        """Terraform's three numbers (a replacement counts as a change), and what is kept unmanaged."""
        add = sum(1 for s in self.changes if s.action == "create")
        destroy = sum(1 for s in self.changes if s.action == "delete")
        kept = sum(1 for s in self.steps if s.kind == "keep")
        return {"add": add, "change": len(self.changes) - add - destroy, "destroy": destroy, "kept": kept}

    def summary(self) -> str:
        counts = self.counts()
        kept = f", {counts['kept']} kept" if counts["kept"] else ""
        return f"Plan: {counts['add']} to add, {counts['change']} to change, {counts['destroy']} to destroy{kept}."

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "created": self.created, "spec_digest": self.spec_digest,
                "state_digest": self.state_digest, "prune": self.prune, "target_filter": list(self.target_filter),
                "summary": {**self.counts(), "text": self.summary()},
                "steps": [asdict(s) | {"wave": s.wave, "depends_on": list(s.depends_on)} for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise MlopsError(f"this plan has format version {data.get('format_version')!r}; "
                                 f"this mlops reads version {FORMAT_VERSION}. Run mlops plan again")
            steps = tuple(Step(id=s["id"], kind=StepKind(s["kind"]), action=Action(s["action"]), address=s["address"],
                               reason=s["reason"], before=s.get("before"), after=s.get("after"),
                               data=PAYLOADS[s["kind"]](**s["data"]), depends_on=tuple(s.get("depends_on") or ()))
                          for s in data["steps"])
            for step in steps:
                if step.kind not in WAVES or step.action not in SYMBOLS:
                    raise MlopsError(f"the plan file has an unknown step kind or action in '{step.id}'")
            return cls(steps=steps, spec_digest=data["spec_digest"], state_digest=data["state_digest"],
                       created=data["created"], prune=bool(data.get("prune")),
                       target_filter=tuple(data.get("target_filter") or ()))
        except MlopsError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise MlopsError(f"not a plan file saved by mlops plan --out ({type(error).__name__}: {error})") from None
