"""What ``mlops plan --replay N`` replays: for every deploy or update step that changes a model version,
the last N requests the live deployment collected, sent to the candidate version in this process.

The live side is the deployment being replaced (an update in place) or the endpoint's serving
deployment, the one with the most traffic (a new deployment beside it); only the requests that the
live version answered count (older versions' requests on the same deployment are passed over). The
candidate is the registered version the step names, materialized by the registry, or — when the plan
registers it — the files at the model's path in the working tree, which are what would be registered.
Nothing is changed anywhere; the comparison itself is ``pipeline.monitor.replay``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ModelLoadError
from pipeline.monitor import replay as comparison
from pipeline.monitor.collected import read_events
from pipeline.plan import Plan
from pipeline.plan.model import DeployData
from pipeline.runtime import Model, load_model
from pipeline.spec.model import ModelRef, Spec


@dataclass(frozen=True)
class Case:
    """One step to replay: the candidate it deploys and the live deployment whose requests it gets."""

    step: str
    candidate: DeployData
    candidate_model: str  # name:version (the version this plan predicts for content it registers)
    source: str | None  # endpoint/deployment whose collected requests are replayed; None: nothing serves
    live_model: str | None


def cases(plan: Plan, serving: Mapping[str, Mapping[str, Any]]) -> list[Case]:
    """The deploy and update steps that change a model version, each with the live deployment it
    replaces or joins (``serving``: ``apply.observe.served``)."""
    found = []
    for step in plan.steps:
        data = step.data
        if not isinstance(data, DeployData) or step.kind not in ("deploy", "update"):
            continue
        candidate = str((step.after or {}).get("model", ""))
        if step.kind == "update":
            if "model" not in (step.before or {}):
                continue  # settings or image only: the same version answers
            source: str | None = f"{data.endpoint}/{data.deployment}"
            live: str | None = str((step.before or {})["model"])
        else:
            live_here = {key: state for key, state in serving.items()
                         if key.startswith(f"{data.endpoint}/") and state.get("traffic", 0) > 0}
            source = max(sorted(live_here), key=lambda key: live_here[key]["traffic"], default=None)
            live = str(live_here[source]["model"]) if source else None
            if live == candidate:
                continue
        found.append(Case(step.id, data, candidate, source, live))
    return found


class Candidates:
    """Candidate models loaded once each, from the registry or the working tree; folders made for a
    single-file model are removed by ``close``."""

    def __init__(self, spec: Spec, registry) -> None:
        self.spec, self.registry = spec, registry
        self.loaded: dict[tuple[str, int | None], tuple[Model | None, str, str | None]] = {}
        self._cleanup = ExitStack()

    def close(self) -> None:
        self._cleanup.close()

    def _folder(self, data: DeployData) -> tuple[Path, str, str]:
        """(folder, flavor, where it comes from)."""
        if data.model_version is not None:
            version = self.registry.get(data.model_name, data.model_version)
            return self.registry.materialize(data.model_name, data.model_version), version.flavor, "registered"
        model = self.spec.models[data.model_name]
        path = self.spec.root / model.path
        if path.is_file():  # registered as a folder holding just this file: load it the same way
            folder = Path(self._cleanup.enter_context(tempfile.TemporaryDirectory(prefix="mlops-replay-")))
            (folder / path.name).symlink_to(path.resolve())
            path = folder
        return path, model.flavor, f"working tree {model.path}, not registered yet"

    def load(self, data: DeployData) -> tuple[Model | None, str, str | None]:
        """(model or None, where it comes from, why it could not be loaded)."""
        key = (data.model_name, data.model_version)
        if key not in self.loaded:
            folder, flavor, origin = self._folder(data)
            relative = self.spec.baseline_in_folder(data.model_name)
            baseline = folder / relative if relative and (folder / relative).is_file() else None
            try:
                loaded = load_model(folder, flavor, baseline)
                loaded.warm_up()  # as the service does before its first request: latency without first-call costs
                self.loaded[key] = (loaded, origin, None)
            except ModelLoadError as error:
                self.loaded[key] = (None, origin, str(error))
            except Exception as error:  # a file the flavor's library cannot read: the candidate's fault
                self.loaded[key] = (None, origin, f"{type(error).__name__}: {error}")
        return self.loaded[key]


def _data_dir(spec: Spec, targets: Mapping[str, Any], endpoint: str) -> tuple[Path | None, str | None]:
    """Where the endpoint's collected files are on this machine, or why they are not."""
    name = spec.endpoints[endpoint].target
    if spec.targets[name].kind.remote_collection:
        return None, (f"endpoint {endpoint} collects into its cluster's sink; replay reads only what was collected "
                      "on this machine (not yet)")
    data_dir = getattr(targets.get(name), "data_dir", None)
    return (Path(data_dir), None) if data_dir is not None else (None, f"target {name} keeps no collected data here")


def _collecting(spec: Spec, source: str) -> bool:
    endpoint, deployment = source.split("/", 1)
    declared = spec.endpoints.get(endpoint)
    found = declared.deployments.get(deployment) if declared is not None else None
    return found is not None and found.data_collector.enabled


def _replay(case: Case, spec: Spec, targets: Mapping[str, Any], candidates: Candidates, limit: int
            ) -> dict[str, Any]:
    report: dict[str, Any] = {"step": case.step, "endpoint": case.candidate.endpoint, "source": case.source,
                              "live_model": case.live_model, "candidate_model": case.candidate_model,
                              "candidate_from": None}
    if case.source is None or case.live_model is None:
        return report | {"note": f"nothing serves on endpoint {case.candidate.endpoint} yet"}
    data_dir, why = _data_dir(spec, targets, case.candidate.endpoint)
    if data_dir is None:
        return report | {"note": why}
    live = ModelRef.parse(case.live_model)
    endpoint, deployment = case.source.split("/", 1)
    reader = read_events(data_dir, endpoint, deployment)
    events = reader.newest(limit, lambda e: e.model == live.name and e.model_version == live.version
                           and comparison.request_of(e) is not None)
    if not events:
        collecting = "" if _collecting(spec, case.source) else \
            f"; its data_collector is off in {spec.file} (data_collector: {{sampling_rate: 1.0}} turns it on)"
        return report | {"note": f"{case.source} collected no answered requests of {case.live_model} "
                                 f"({reader.files_read} files read){collecting}"}
    model, origin, problem = candidates.load(case.candidate)
    report["candidate_from"] = origin
    if model is None:
        return report | {"note": f"the candidate cannot be loaded here: {problem}"}
    result = comparison.replay(model, comparison.requests_of(events))
    return report | {"first": events[0].time, "last": events[-1].time, "result": comparison.summarize(result)}


def run(spec: Spec, registry, targets: Mapping[str, Any], found: list[Case], limit: int) -> list[dict[str, Any]]:
    """Replay every case on its last ``limit`` collected requests: one report (plain data) per case."""
    with closing(Candidates(spec, registry)) as candidates:
        return [_replay(case, spec, targets, candidates, limit) for case in found]
