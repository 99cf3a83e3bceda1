"""The ``Registry`` protocol on an MLflow tracking server's Model Registry.

Each mlops version is an MLflow model version whose files are the artifacts (under ``model/``) of a
run of its own, in the experiment ``experiment``. What mlops needs beyond MLflow's records lives in
version tags (``mlops.digest``, ``mlops.files``, ``mlops.flavor``, ``mlops.lineage.*`` …), so the
MLflow UI shows where each version came from, and every download is verified against them.

Versions MLflow holds that mlops did not register (``mlflow.sklearn.log_model(...,
registered_model_name=...)``) are MLflow model folders: listed with flavor "mlflow" and no digest
until first materialized, when their digest is computed and recorded (trust on first use).

Which deployment serves which version is an alias per deployment (``endpoint-deployment``); each
project records the aliases it manages in the registered-model tag ``mlops.serving.<project>``, so
projects sharing a server never remove each other's.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import IntegrityError, MlopsError, ReferenceNotFound, RegistryError
from pipeline.registry.base import (
    ModelSummary,
    ModelVersion,
    download_aside,
    materialized,
    refuse_if_used,
    remove_materialized,
    remove_tree,
)
from pipeline.registry.hashing import ContentDigest, FileEntry, digest_content, is_skipped, list_files
from pipeline.registry.mlflow_client import RESERVED_PREFIX, connect, error_code, translated

PREFIX = "mlops."
DIGEST, FILES, FILES_ARTIFACT, SIZE, FLAVOR = "mlops.digest", "mlops.files", "mlops.files.artifact", "mlops.size", \
    "mlops.flavor"
SIGNATURE, LINEAGE, ARCHIVED, SERVING = "mlops.signature", "mlops.lineage", "mlops.archived", "mlops.serving."
# MLflow 2.x servers keep at most 5000 characters of a model-registry tag value (3.x: 100 000).
TAG_LIMIT = 5000
READY_TIMEOUT = 300.0
_PAGE = 1000
_NAMES_PER_SEARCH = 50  # models per "name IN (...)" search: short URLs, few requests
_NOT_ALIAS = re.compile(r"[^\w-]+")


def alias_for(user: str) -> str:
    """The MLflow alias that protects a version for ``user``: "iris/blue" → ``iris-blue``, and a user
    with a note ("iris/blue (being deployed)") → ``iris-blue-next``, which leaves ``iris-blue`` where it is."""
    key, note = (user.split(" (", 1) + [""])[:2]
    alias = _NOT_ALIAS.sub("-", key.replace("/", "-")).strip("-") + ("-next" if note else "")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):  # names MLflow reserves
        alias = "d-" + alias
    return alias


def _iso(millis: int | None) -> str:
    return datetime.fromtimestamp((millis or 0) / 1000, UTC).isoformat(timespec="seconds")


def _quoted(text: str) -> str:
    """A string literal for MLflow's search filters."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MlflowRegistry:
    """The ``Registry`` protocol on an MLflow Model Registry (see the module docstring)."""

    def __init__(self, tracking_uri: str, cache_dir: Path, *, project: str, experiment: str = "mlops-models"):
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.project = project
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None
        self._files_cache: dict[tuple[str, str], tuple[FileEntry, ...]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.tracking_uri)
        return self._client

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)`` with MLflow's failures said in mlops terms (``what`` names the model)."""
        client = self.client
        with translated(self.tracking_uri, what):
            return getattr(client, method)(*args, **kwargs)

    # -- reading ---------------------------------------------------------------------------

    def _raw_versions(self, name: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = self._call(f"listing the versions of {name}", "search_model_versions", f"name = {_quoted(name)}",
                              max_results=_PAGE, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return sorted(found, key=lambda v: int(v.version))

    def _files(self, raw: Any) -> tuple[FileEntry, ...]:
        tags = raw.tags or {}
        if FILES in tags:
            return tuple(FileEntry(*entry) for entry in json.loads(tags[FILES]))
        if FILES_ARTIFACT not in tags or not raw.run_id:
            return ()
        key = (raw.run_id, tags[FILES_ARTIFACT])
        if key not in self._files_cache:
            with tempfile.TemporaryDirectory() as scratch:
                local = self._call(f"reading the file list of {raw.name}:{raw.version}",
                                   "download_artifacts", raw.run_id, key[1], scratch)
                entries = json.loads(Path(local).read_text())
            self._files_cache[key] = tuple(FileEntry(*entry) for entry in entries)
        return self._files_cache[key]

    def _record(self, raw: Any) -> ModelVersion:
        tags: dict[str, str] = dict(raw.tags or {})
        if LINEAGE in tags:
            lineage = json.loads(tags[LINEAGE])
        else:
            lineage = {k[len(LINEAGE) + 1:]: v for k, v in tags.items() if k.startswith(LINEAGE + ".")}
        return ModelVersion(
            name=raw.name, version=int(raw.version), digest=tags.get(DIGEST, ""), size=int(tags.get(SIZE, 0)),
            flavor=tags.get(FLAVOR, "mlflow"), files=self._files(raw),
            signature=json.loads(tags[SIGNATURE]) if SIGNATURE in tags else None,
            description=raw.description or "", tags={k: v for k, v in tags.items() if not k.startswith(PREFIX)},
            created=_iso(raw.creation_timestamp), archived=tags.get(ARCHIVED) == "true", lineage=lineage)

    def list_versions(self, name: str, include_archived: bool = False) -> list[ModelVersion]:
        records = [self._record(raw) for raw in self._raw_versions(name)]
        return [r for r in records if include_archived or not r.archived]

    def list_models(self) -> list[ModelSummary]:
        names: list[str] = []
        token = None
        while True:
            page = self._call("listing the registered models", "search_registered_models", max_results=_PAGE,
                              page_token=token)
            names.extend(m.name for m in page if not m.name.startswith(RESERVED_PREFIX))
            token = page.token
            if not token:
                break
        summaries = []
        for name in sorted(names):
            raws = self._raw_versions(name)
            if not raws:
                continue
            live = [int(r.version) for r in raws if (r.tags or {}).get(ARCHIVED) != "true"]
            summaries.append(ModelSummary(name=name, versions=len(raws), latest=max(live) if live else None,
                                          updated=_iso(max(r.creation_timestamp or 0 for r in raws))))
        return summaries

    def _not_found(self, name: str, version: int | None) -> ReferenceNotFound:
        available = [f"{name}:{v.version}" for v in self.list_versions(name)]
        known = ", ".join(available) if available else f"no versions of '{name}' are registered"
        wanted = f"{name}:{version}" if version is not None else f"a version of {name}"
        return ReferenceNotFound(f"{wanted} is not in the registry ({known})")

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        if version is None:
            live = self.list_versions(name)
            if not live:
                raise self._not_found(name, None)
            return live[-1]
        try:
            raw = self._call(f"reading {name}:{version}", "get_model_version", name, str(version))
        except ReferenceNotFound:
            raise self._not_found(name, version) from None
        return self._record(raw)

    def _with_digest(self, name: str, digest: str) -> list[Any]:
        page = self._call(f"looking up {name} by digest", "search_model_versions",
                          f"name = {_quoted(name)} and tags.`{DIGEST}` = {_quoted(digest)}", max_results=_PAGE)
        return sorted(page, key=lambda v: int(v.version))

    def find(self, name: str, digest: str) -> ModelVersion | None:
        same = self._with_digest(name, digest)
        return self._record(same[0]) if same else None

    def versions_by_name(self, names: Iterable[str]) -> dict[str, list[ModelVersion]]:
        """Every version (archived too) of each model, in a few searches rather than one per model."""
        wanted = sorted(set(names))
        found: dict[str, list[ModelVersion]] = {name: [] for name in wanted}
        for start in range(0, len(wanted), _NAMES_PER_SEARCH):
            chunk = wanted[start:start + _NAMES_PER_SEARCH]
            query = f"name IN ({', '.join(_quoted(name) for name in chunk)})"
            token = None
            while True:
                page = self._call(f"listing the versions of {len(chunk)} models", "search_model_versions", query,
                                  max_results=_PAGE, page_token=token)
                for raw in page:
                    found[raw.name].append(self._record(raw))
                token = page.token
                if not token:
                    break
        return {name: sorted(versions, key=lambda v: v.version) for name, versions in found.items()}

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases (``models:/name@alias``) and the versions they point at; none if unknown."""
        try:
            model = self._call(f"reading the aliases of {name}", "get_registered_model", name)
        except ReferenceNotFound:
            return {}
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}

    def resolve_alias(self, name: str, alias: str) -> int:
        """The version ``models:/name@alias`` names."""
        aliases = self.aliases(name)
        if alias not in aliases:
            known = ", ".join(f"{name}@{a}" for a in sorted(aliases)) or f"'{name}' has no aliases"
            raise ReferenceNotFound(f"{name}@{alias} is not in the registry ({known})")
        return aliases[alias]

    def run_info(self, name: str, version: int) -> dict[str, Any]:
        """The MLflow run that produced a version and the metrics it logged (for a promotion's pull request);
        empty when the version has no run (or it is gone)."""
        raw = self._call(f"reading {name}:{version}", "get_model_version", name, str(version))
        if not raw.run_id:
            return {}
        try:
            run = self._call(f"reading the run of {name}:{version}", "get_run", raw.run_id)
        except MlopsError:
            return {"run_id": raw.run_id}
        return {"run_id": raw.run_id, "metrics": dict(run.data.metrics or {})}

    # -- writing ---------------------------------------------------------------------------

    def _experiment(self) -> str:
        if self._experiment_id is None:
            what = f"opening the experiment '{self.experiment}'"
            found = self._call(what, "get_experiment_by_name", self.experiment)
            if found is None:
                with translated(self.tracking_uri, what):
                    try:
                        self._experiment_id = self.client.create_experiment(self.experiment)
                    except Exception as error:  # another process created it meanwhile
                        if error_code(error) != "RESOURCE_ALREADY_EXISTS":
                            raise
                        self._experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
            else:
                if found.lifecycle_stage == "deleted":
                    self._call(what, "restore_experiment", found.experiment_id)
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _files_tags(self, run_id: str, path: str, content: ContentDigest) -> dict[str, str]:
        """The file list as a tag, or (too long for one) as a run artifact the tag names."""
        listing = json.dumps([[f.path, f.digest, f.size] for f in content.files], separators=(",", ":"))
        if len(listing) <= TAG_LIMIT:
            return {FILES: listing}
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / Path(path).name
            local.write_text(listing)
            parent = str(Path(path).parent)
            self._call(f"storing the file list of {path}", "log_artifact", run_id, str(local),
                       None if parent == "." else parent)
        return {FILES_ARTIFACT: path}

    def register(self, name: str, source: Path, *, flavor: str, description: str = "",
                 tags: Mapping[str, str] | None = None, lineage: Mapping[str, Any] | None = None,
                 signature: Mapping[str, Any] | None = None) -> tuple[ModelVersion, bool]:
        """Store ``source`` as the next version of ``name`` unless a version already has its content.
        Processes racing with the same content each create one, then all keep the lowest."""
        reserved = sorted(key for key in (tags or {}) if key.startswith(PREFIX))
        if reserved:
            raise RegistryError(f"tag {reserved[0]} of {name}: tags starting with '{PREFIX}' are mlops' own")
        content = digest_content(source)
        existing = self.find(name, content.digest)
        if existing is not None:
            return existing, False
        with translated(self.tracking_uri, f"registering {name}"):
            try:
                self.client.create_registered_model(name)
            except Exception as error:
                if error_code(error) != "RESOURCE_ALREADY_EXISTS":
                    raise
        experiment = self._experiment()
        run = self._call(f"registering {name}", "create_run", experiment,
                         tags={"mlops.model": name, "mlflow.runName": f"{name}-{content.digest[7:19]}"})
        run_id = run.info.run_id
        files = list_files(Path(source))
        for relative, _stat, path in files:
            folder = str(Path("model", relative).parent)
            self._call(f"uploading {relative} of {name}", "log_artifact", run_id, str(path), folder)
        if [(r, s.st_size, s.st_mtime_ns) for r, s, _ in files] != \
                [(r, s.st_size, s.st_mtime_ns) for r, s, _ in list_files(Path(source))]:
            self._call(f"registering {name}", "delete_run", run_id)
            raise IntegrityError(f"{source} changed while it was being registered; try again")
        version_tags = {**dict(tags or {}), DIGEST: content.digest, SIZE: str(content.size), FLAVOR: flavor,
                        LINEAGE: json.dumps(dict(lineage or {}), sort_keys=True, default=str),
                        **self._files_tags(run_id, "mlops-files.json", content)}
        version_tags.update({f"{LINEAGE}.{k}": str(v) for k, v in (lineage or {}).items() if v is not None})
        if signature:
            version_tags[SIGNATURE] = json.dumps(signature, sort_keys=True)
        self._call(f"registering {name}", "update_run", run_id, status="FINISHED")  # set_terminated prints a link
        created = self._call(f"registering {name}", "create_model_version", name, f"{run.info.artifact_uri}/model",
                             run_id, tags=version_tags, description=description or None, await_creation_for=0)
        ours = int(created.version)
        self._wait_ready(name, ours)
        same = self._with_digest(name, content.digest)
        winner = int(same[0].version) if same else ours
        if winner != ours:  # another process registered the same content first: keep its version only
            self._call(f"removing the duplicate {name}:{ours}",
                       "delete_model_version", name, str(ours))
            self._call(f"removing the duplicate {name}:{ours}", "delete_run", run_id)
            return self.get(name, winner), False
        return self.get(name, ours), True

    def _wait_ready(self, name: str, version: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            raw = self._call(f"registering {name}:{version}",
                             "get_model_version", name, str(version))
            if raw.status == "READY":
                return
            if raw.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise RegistryError(f"MLflow did not make {name}:{version} ready ({raw.status}: "
                                    f"{raw.status_message or 'no message'})")
            time.sleep(0.2)

    # -- files -----------------------------------------------------------------------------

    def _fetch(self, record: ModelVersion, target: Path) -> None:
        """Download a version's stored files into the empty folder ``target`` (unverified)."""
        import mlflow.artifacts  # loaded by connect() already; never at import time

        what = f"downloading {record.ref}"
        location = self._call(what, "get_model_version_download_uri", record.name, str(record.version))
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".mlflow-"))
        try:
            with translated(self.tracking_uri, what):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(scratch),
                                                                 tracking_uri=self.tracking_uri))
            for child in (local.iterdir() if local.is_dir() else [local]):
                shutil.move(str(child), target / child.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for path in sorted(target.rglob("*"), reverse=True):
            if path.is_file() and is_skipped(path.relative_to(target).as_posix()):
                path.unlink()  # not part of a model's content, by the hashing rules

    def _verify(self, record: ModelVersion, folder: Path) -> None:
        actual = digest_content(folder)
        expected = {f.path: f for f in record.files}
        for entry in actual.files:
            known = expected.pop(entry.path, None)
            if record.files and (known is None or known.digest != entry.digest):
                raise IntegrityError(f"{record.ref}: the stored file {entry.path} does not match its digest (the "
                                     "MLflow artifacts were tampered with or are corrupt)")
        if expected:
            raise IntegrityError(f"{record.ref}: the stored file {sorted(expected)[0]} is missing from MLflow")
        if actual.digest != record.digest:
            raise IntegrityError(f"{record.ref}: the stored files do not match its digest {record.digest} (the "
                                 "MLflow artifacts were tampered with or are corrupt)")

    def _trust(self, record: ModelVersion, content: ContentDigest) -> ModelVersion:
        """Record the digest of a version mlops did not register, from its first download."""
        raw = self._call(f"reading {record.ref}", "get_model_version", record.name, str(record.version))
        tags = {DIGEST: content.digest, SIZE: str(content.size)}
        listing = json.dumps([[f.path, f.digest, f.size] for f in content.files], separators=(",", ":"))
        if len(listing) <= TAG_LIMIT:
            tags[FILES] = listing
        elif raw.run_id:
            tags.update(self._files_tags(raw.run_id, f"mlops-files/{content.digest[7:]}.json", content))
        for key, value in tags.items():
            self._call(f"recording the digest of {record.ref}", "set_model_version_tag", record.name,
                       str(record.version), key, value)
        return self.get(record.name, record.version)

    def _with_content(self, name: str, version: int, use: Callable[[ModelVersion, Callable[[Path], None]], Path]
                      ) -> Path:
        """Call ``use(record, fill)``: ``fill(folder)`` writes the version's verified files there."""
        record = self.get(name, version)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        first: Path | None = None
        try:
            if not record.digest:
                first = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".trust-"))
                self._fetch(record, first)
                record = self._trust(record, digest_content(first))

            def fill(target: Path) -> None:
                nonlocal first
                if first is not None:
                    for child in first.iterdir():
                        shutil.move(str(child), target / child.name)
                    first = None
                else:
                    self._fetch(record, target)
                self._verify(record, target)

            return use(record, fill)
        finally:
            if first is not None:
                remove_tree(first)

    def _folder(self, record: ModelVersion) -> Path:
        return self.cache_dir / record.digest.split(":", 1)[1]

    def materialize(self, name: str, version: int) -> Path:
        """A verified, read-only folder with the version's files (built once, reused while it re-hashes)."""
        return self._with_content(name, version, lambda record, fill: materialized(self._folder(record),
                                                                                 record.digest, fill))

    def download(self, name: str, version: int, destination: Path) -> Path:
        """Copy a version into ``destination`` (new or empty): written aside, renamed once verified."""
        return self._with_content(name, version, lambda _record, fill: download_aside(destination, fill))

    # -- usage and deletion ----------------------------------------------------------------

    def _managed(self, model: Any, project: str) -> list[str]:
        return list(json.loads((model.tags or {}).get(SERVING + project, "[]")))

    def _serving_models(self) -> Iterator[Any]:
        token = None
        while True:
            page = self._call("listing the registered models", "search_registered_models", max_results=_PAGE,
                              page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _set_managed(self, name: str, users: list[str]) -> None:
        what = f"recording the deployments of {name}"
        key = SERVING + self.project
        if users:
            self._call(what, "set_registered_model_tag", name, key, json.dumps(sorted(set(users))))
        else:
            with translated(self.tracking_uri, what):
                try:
                    self.client.delete_registered_model_tag(name, key)
                except Exception as error:
                    if error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                        raise

    def _refuse_foreign(self, model: Any, alias: str) -> None:
        """An alias another project manages on this model is not this project's to move."""
        for key, value in (model.tags or {}).items():
            if key.startswith(SERVING) and key != SERVING + self.project:
                if alias in {alias_for(user) for user in json.loads(value)}:
                    raise RegistryError(f"{model.name}@{alias} is managed by the mlops project "
                                        f"'{key[len(SERVING):]}' on this MLflow server; rename the endpoint or "
                                        "deployment")

    def set_usage(self, usage: Mapping[str, tuple[str, int]]) -> None:
        """Point each deployment's alias at the version it serves and drop the aliases this project set
        before that no deployment needs now (other projects' aliases are left alone)."""
        wanted: dict[str, dict[str, int]] = {}
        for user, (name, version) in usage.items():
            wanted.setdefault(name, {})[user] = version
        names = {m.name for m in self._serving_models() if SERVING + self.project in (m.tags or {})} | set(wanted)
        models = {name: self._call(f"reading {name}", "get_registered_model", name) for name in names}
        for name, now in wanted.items():  # refuse before changing anything
            by_alias: dict[str, str] = {}
            for user in sorted(now):
                alias = alias_for(user)
                if by_alias.setdefault(alias, user) != user:
                    raise RegistryError(f"{by_alias[alias]} and {user} would share the alias {name}@{alias}; "
                                        "rename one of them")
                self._refuse_foreign(models[name], alias)
        for name, model in sorted(models.items()):
            before = self._managed(model, self.project)
            now = wanted.get(name, {})
            if set(before) | set(now) != set(before):
                self._set_managed(name, before + list(now))  # recorded before set: a crash never orphans one
            aliases = dict(model.aliases or {})
            for user, version in sorted(now.items()):
                alias = alias_for(user)
                if aliases.get(alias) != str(version):
                    self._call(f"pointing {name}@{alias} at {name}:{version}", "set_registered_model_alias", name,
                               alias, str(version))
            keep = {alias_for(user) for user in now}
            for alias in sorted({alias_for(user) for user in before} - keep):
                if alias in aliases:
                    self._call(f"removing {name}@{alias}", "delete_registered_model_alias", name, alias)
            if sorted(set(before)) != sorted(now):
                self._set_managed(name, list(now))

    def add_usage(self, user: str, name: str, version: int) -> None:
        """Protect a version before a deployment starts serving it, with an alias of its own (see
        ``alias_for``), so the version the deployment serves now stays protected too."""
        self.get(name, version)
        model = self._call(f"reading {name}", "get_registered_model", name)
        alias = alias_for(user)
        self._refuse_foreign(model, alias)
        before = self._managed(model, self.project)
        if user not in before:
            self._set_managed(name, before + [user])
        self._call(f"pointing {name}@{alias} at {name}:{version}",
                   "set_registered_model_alias", name, alias, str(version))

    def users(self, name: str, version: int) -> list[str]:
        """The deployments (of any project on this server) whose aliases point at the version."""
        try:
            model = self._call(f"reading {name}", "get_registered_model", name)
        except ReferenceNotFound:
            return []
        aliases = dict(model.aliases or {})
        found: set[str] = set()
        for key, value in (model.tags or {}).items():
            if key.startswith(SERVING):
                found.update(user for user in json.loads(value) if aliases.get(alias_for(user)) == str(version))
        return sorted(found)

    def archive(self, name: str, version: int) -> None:
        self.get(name, version)
        refuse_if_used(name, version, "archive", self.users(name, version))
        self._call(f"archiving {name}:{version}", "set_model_version_tag", name, str(version), ARCHIVED, "true")

    def delete(self, name: str, version: int) -> list[str]:
        """Delete a version (MLflow never reuses its number) and the run mlops stored its files in. The
        artifacts stay on the server until ``mlflow gc`` collects deleted runs, so none are freed here."""
        record = self.get(name, version)
        refuse_if_used(name, version, "delete", self.users(name, version))
        raw = self._call(f"reading {record.ref}", "get_model_version", name, str(version))
        self._call(f"deleting {record.ref}", "delete_model_version", name, str(version))
        if raw.run_id:
            try:
                run = self._call(f"deleting the run of {record.ref}", "get_run", raw.run_id)
            except ReferenceNotFound:
                run = None
            if run is not None and run.data.tags.get("mlops.model") == name:  # mlops made it for this version
                self._call(f"deleting the run of {record.ref}", "delete_run", raw.run_id)
        if record.digest and self.find(name, record.digest) is None:
            remove_materialized(self._folder(record))
        return []
