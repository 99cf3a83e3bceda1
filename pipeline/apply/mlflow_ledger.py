"""The deployment ledger on an MLflow tracking server, so CI runners (which lose ``.mlops/``) share it.

Same entries as the SQLite ``Ledger``: one MLflow run per entry in one experiment, named
``apply #N / outcome``. Everything ``entries()`` needs is in the run's tags, because one
``search_runs`` page returns the tags of up to 1000 runs: reading the history is one request, not
one download per entry. A value too long for a tag (MLflow caps them at 5000 characters in older
servers) goes to an artifact instead and is fetched only for those runs. The entry id N is also a
metric, the one thing MLflow can sort numerically, so the next id is one query; ``record`` runs
under the apply lock, so two applies never pick the same N. The plan itself is the run's
``plan.json`` artifact.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.apply.ledger import Entry
from pipeline.errors import RegistryError
from pipeline.faults import crash_point
from pipeline.registry.mlflow_client import connect, error_code, translated

ENTRY = "mlops.entry"
_TAG_LIMIT = 5000  # MLflow 2.x's MAX_TAG_VAL_LENGTH (8000 since); longer values become artifacts
_LONG = ("summary", "served", "acted_on")  # values that can outgrow a tag
_PAGE = 1000
_ALL_RUNS = 3  # mlflow.entities.ViewType.ALL: active and deleted runs


class MlflowLedger:
    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.tracking_uri)
        return self._client

    def record(self, *, commit: str | None, author: str | None, summary: str, outcome: str,
               served: Mapping[str, Mapping[str, Any]], acted_on: tuple[str, ...] = (),
               plan_json: str | None = None) -> int:
        experiment_id = self._experiment(create=True)
        assert experiment_id is not None
        number = self._last_entry(experiment_id) + 1
        values = {"summary": summary, "served": json.dumps(served, sort_keys=True),
                  "acted_on": json.dumps(sorted(acted_on))}
        tags = {ENTRY: str(number), "mlops.outcome": outcome}
        if commit:
            tags["mlops.commit"] = tags["mlflow.source.git.commit"] = commit
        if author:
            tags["mlops.author"] = tags["mlflow.user"] = author
        long = {name: value for name, value in values.items() if len(value) > _TAG_LIMIT}
        tags.update({f"mlops.{name}": value for name, value in values.items() if name not in long})
        tags.update({f"mlops.{name}_artifact": f"{name}.txt" for name in long})
        with translated(self.tracking_uri, f"recording apply #{number} in the MLflow experiment '{self.experiment}'"):
            run = self.client.create_run(experiment_id, start_time=int(time.time() * 1000), tags=tags,
                                         run_name=f"apply #{number} / {outcome}")
            run_id = run.info.run_id
            for name, value in long.items():
                self.client.log_text(run_id, value, f"{name}.txt")
            if plan_json is not None:
                self.client.log_text(run_id, plan_json, "plan.json")
            # Last: a run without the metric is not an entry yet, so a crash before here leaves no half entry.
            self.client.log_metric(run_id, ENTRY, number, step=0)
            self.client.set_terminated(run_id, "FAILED" if outcome in ("failed", "rolled back") else "FINISHED")
        crash_point("ledger entry committed")
        return number

    def entries(self, endpoint: str | None = None) -> list[Entry]:
        experiment_id = self._experiment(create=False)
        if experiment_id is None:
            return []
        runs: list[Any] = []
        token = None
        with translated(self.tracking_uri, f"reading the ledger in the MLflow experiment '{self.experiment}'"):
            while True:
                page = self.client.search_runs([experiment_id], filter_string=f"metrics.`{ENTRY}` > 0",
                                               max_results=_PAGE, order_by=[f"metrics.`{ENTRY}` ASC"],
                                               page_token=token)
                runs.extend(page)
                token = page.token
                if not token:
                    break
            entries = [self._entry(run) for run in runs if run.data.tags.get(ENTRY, "").isdigit()]
        entries.sort(key=lambda entry: entry.id)
        if endpoint is not None:
            entries = [e for e in entries if endpoint in e.endpoints()]
        return entries

    def close(self) -> None:
        self._client = None

    def _entry(self, run: Any) -> Entry:
        tags = run.data.tags
        values = {name: tags.get(f"mlops.{name}") for name in _LONG}
        for name in _LONG:
            if values[name] is None and f"mlops.{name}_artifact" in tags:
                values[name] = self._download_text(run.info.run_id, tags[f"mlops.{name}_artifact"])
        return Entry(id=int(tags[ENTRY]),
                     time=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
                     commit=tags.get("mlops.commit"), author=tags.get("mlops.author"), summary=values["summary"] or "",
                     outcome=tags.get("mlops.outcome", ""), served=json.loads(values["served"] or "{}"),
                     acted_on=tuple(json.loads(values["acted_on"] or "[]")))

    def _download_text(self, run_id: str, path: str) -> str:
        with tempfile.TemporaryDirectory() as folder:
            local = self.client.download_artifacts(run_id, path, folder)
            return Path(local).read_text()

    def _last_entry(self, experiment_id: str) -> int:
        """The highest entry id, deleted runs included, so an id is never given twice."""
        with translated(self.tracking_uri, f"reading the last entry of the MLflow experiment '{self.experiment}'"):
            runs = self.client.search_runs([experiment_id], filter_string=f"metrics.`{ENTRY}` > 0",
                                           run_view_type=_ALL_RUNS, max_results=1,
                                           order_by=[f"metrics.`{ENTRY}` DESC"])
        return int(runs[0].data.metrics[ENTRY]) if runs else 0

    def _experiment(self, create: bool) -> str | None:
        if self._experiment_id is not None:
            return self._experiment_id
        what = f"opening the MLflow experiment '{self.experiment}'"
        with translated(self.tracking_uri, what):
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None and create:
                try:
                    self._experiment_id = str(self.client.create_experiment(self.experiment))
                    return self._experiment_id
                except Exception as error:
                    if error_code(error) != "RESOURCE_ALREADY_EXISTS":
                        raise
                found = self.client.get_experiment_by_name(self.experiment)  # created meanwhile
        if found is None:
            return None
        if found.lifecycle_stage == "deleted":
            raise RegistryError(f"{what}: it was deleted; restore it in MLflow or use another experiment name")
        self._experiment_id = str(found.experiment_id)
        return self._experiment_id
