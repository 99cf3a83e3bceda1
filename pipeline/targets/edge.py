"""The edge target: each deployment is an offline bundle (``mlops export``'s) in the target's ``output`` folder.

Devices run the bundles; nothing runs here. So the bundle folders are the target's records: ``observe``
reads each ``<output>/<endpoint>-<deployment>/bundle.json`` this project's target wrote (its image labels
name project, target, endpoint and deployment) and checks its ``SHA256SUMS``; ``deploy`` is
``builders.export.export`` (atomic files, nothing rewritten when the ``content_digest`` is unchanged, no key
ever baked in), then a push of the bundle's image when ``image_repository`` is set, recorded in
``pushed.json`` so that a failed push shows as drift. There are no endpoints to create, no traffic, no
keys (the device gives them: ``MLOPS_PRIMARY_KEY``) and no logs here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import MlopsError, TargetError
from pipeline.spec.model import Endpoint, Spec
from pipeline.spec.model import Target as TargetSpec
from pipeline.state import DEGRADED, RUNNING, STOPPED, ObservedDeployment, ObservedEndpoint
from pipeline.targets.base import DeployRequest, TargetLock

PUSHED = "pushed.json"  # beside the bundle (not in SHA256SUMS): where its image was pushed, and the digest


class EdgeTarget:
    """Bundles for devices, written where ``output`` says (relative to mlops.yaml)."""

    def __init__(self, target: TargetSpec, state_dir: Path, *, project: str, spec: Spec,
                 progress: Callable[[str], None] | None = None):
        self.name = target.name
        self.target = target
        self.spec = spec
        self.project = project
        self.output = (spec.root / (target.output or ".")).resolve()
        self.progress = progress or (lambda line: None)
        self._builder: Any = None

    # -- records: the bundle folders -------------------------------------------------------------

    def _folder(self, endpoint: str, deployment: str) -> Path:
        return (self.spec.root / self.target.bundle_folder(endpoint, deployment)).resolve()

    def _bundles(self) -> Iterator[tuple[Path, dict]]:
        """(folder, bundle.json) of every bundle this target of this project wrote."""
        if not self.output.is_dir():
            return
        for folder in sorted(self.output.iterdir()):
            try:
                bundle = json.loads((folder / "bundle.json").read_text())
            except (OSError, ValueError):
                continue
            labels = bundle.get("labels") or {} if isinstance(bundle, dict) else {}
            if labels.get("mlops.project") == self.project and labels.get("mlops.target") == self.name:
                yield folder, bundle

    def _pushed(self, folder: Path) -> dict:
        try:
            return json.loads((folder / PUSHED).read_text())
        except (OSError, ValueError):
            return {}

    def _pushed_ref(self, bundle: dict) -> str | None:
        """The bundle's image in ``image_repository`` (None: not pushed anywhere)."""
        repository = self.target.image_repository
        return f"{repository.rstrip('/')}/{bundle['image']}" if repository else None

    def observe(self) -> tuple[list[ObservedEndpoint], list[ObservedDeployment]]:
        from pipeline.builders.export import verify_sums

        endpoints: dict[str, ObservedEndpoint] = {}
        deployments = []
        for folder, bundle in self._bundles():
            labels = bundle["labels"]
            endpoint, name = labels.get("mlops.endpoint", ""), labels.get("mlops.deployment", "")
            damaged = verify_sums(folder) if (folder / "SHA256SUMS").is_file() else ["SHA256SUMS"]
            pushed, wanted_push = self._pushed(folder), self._pushed_ref(bundle)
            unpushed = wanted_push is not None and pushed.get("image") != wanted_push
            status = STOPPED if damaged else DEGRADED if unpushed else RUNNING
            detail = {"folder": str(folder), "tarball": bundle.get("tarball"),
                      "tarball_size": bundle.get("tarball_size"),
                      "image_size": bundle.get("image_size"), "content_digest": bundle.get("content_digest"),
                      "bundle_image": bundle.get("image"), "damaged": damaged, "unpushed": unpushed,
                      # what a device pulls (kept by image garbage collection while the bundle exists)
                      "pinned_image": f"{wanted_push.rpartition(':')[0]}@{pushed['digest']}"
                      if wanted_push and not unpushed and pushed.get("digest") else bundle.get("image")}
            deployments.append(ObservedDeployment(
                endpoint=endpoint, name=name, target=self.name, model=f"{bundle['model']}:{bundle['version']}",
                environment=bundle.get("environment"), image=bundle.get("environment_image"), instance_count=1,
                ready_instances=0 if damaged else 1,
                settings_digest=bundle.get("format", ""),  # the one setting a bundle holds (see plan's _export)
                status=status, detail=detail))
            endpoints.setdefault(endpoint, ObservedEndpoint(endpoint, self.name, url=None, auth_mode="key"))
        return list(endpoints.values()), deployments

    # -- changes ---------------------------------------------------------------------------------

    def lock(self, operation: str, notice: Callable[[str], None] | None = None) -> TargetLock | None:
        return None  # a folder beside mlops.yaml: the state lock guards it

    def ensure_endpoint(self, endpoint: Endpoint) -> ObservedEndpoint:
        return ObservedEndpoint(endpoint.name, self.name, url=None, auth_mode=endpoint.auth_mode)

    def _images(self):
        if self._builder is None:
            from pipeline.builders import ImageBuilder

            self._builder = ImageBuilder(self.spec, self.spec.state_dir())
        return self._builder

    def deploy(self, request: DeployRequest) -> ObservedDeployment:
        """Write the bundle (only when its content changed), then push its image when the target says where."""
        from pipeline.builders.export import ExportRequest, export
        from pipeline.builders.model_image import model_layer
        from pipeline.errors import ModelLoadError
        from pipeline.runtime.flavors import load_model

        endpoint, deployment, model = request.endpoint, request.deployment, request.model
        if deployment.environment is None:  # the validator requires one
            raise TargetError(f"deployment {deployment.key}: an edge bundle needs an environment")
        baseline = model.path / request.baseline if request.baseline else None
        try:
            signature = load_model(model.path, model.flavor, baseline).describe()
        except ModelLoadError as error:
            raise MlopsError(f"cannot load {model.ref} to export it: {error}") from None
        folder = self._folder(endpoint.name, deployment.name)
        labels = {"mlops.project": self.project, "mlops.target": self.name, "mlops.endpoint": endpoint.name,
                  "mlops.deployment": deployment.name}
        result = export(self._images(), ExportRequest(
            model=model_layer(model), environment=deployment.environment, output=folder,
            format=self.target.format, base_image=self.target.base_image, signature=signature,
            baseline=request.baseline, overwrite=True, endpoint=endpoint.name, deployment=deployment.name,
            labels=labels), progress=self.progress)
        if self.target.image_repository:
            self._push(folder, result.bundle, result.tarball)
        return next(d for d in self.observe()[1] if d.key == deployment.key)

    def _push(self, folder: Path, bundle: dict, tarball: Path) -> None:
        """Push the bundle's image as ``<image_repository>/<image>``, loading it from the tarball when this
        engine no longer has it; ``pushed.json`` records the repository's digest (written last)."""
        from pipeline.builders.base import image_exists
        from pipeline.builders.export import write_atomic

        ref = self._pushed_ref(bundle)
        assert ref is not None
        if self._pushed(folder).get("image") == ref:
            return
        builder = self._images()
        client = builder.client_for(None)
        if not image_exists(client, bundle["image"]):
            with open(tarball, "rb") as data:
                client.images.load(data)
        repository, _, tag = ref.rpartition(":")
        client.images.get(bundle["image"]).tag(repository, tag=tag)
        try:
            digest = builder.push(ref, client=client)
        finally:
            client.images.remove(ref)  # only this tag: the image stays under its bundle name
        write_atomic(folder / PUSHED, json.dumps({"image": ref, "digest": digest}, indent=2).encode() + b"\n")

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        """Nothing routes between bundles (the validator refuses traffic on edge endpoints)."""

    def delete(self, endpoint: str, deployment: str) -> None:
        """Remove the bundle's folder (idempotent); what was pushed stays in the image repository."""
        for folder, bundle in self._bundles():
            labels = bundle["labels"]
            if labels.get("mlops.endpoint") == endpoint and labels.get("mlops.deployment") == deployment:
                shutil.rmtree(folder)

    def delete_endpoint(self, endpoint: str) -> None:
        for folder, bundle in self._bundles():
            if bundle["labels"].get("mlops.endpoint") == endpoint:
                shutil.rmtree(folder)

    def logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        raise TargetError(f"{endpoint}/{deployment} is a bundle on target '{self.name}': it runs on devices, whose "
                          "logs are theirs (docker logs there)")

    def url(self, endpoint: str) -> str | None:
        return None

    def keys(self, endpoint: str) -> dict[str, str]:
        raise TargetError(f"endpoint '{endpoint}' is on edge target '{self.name}': each device sets its own keys "
                          "(MLOPS_PRIMARY_KEY, MLOPS_SECONDARY_KEY); none are kept here")

    def rotate_key(self, endpoint: str, which: str) -> dict[str, str]:
        return self.keys(endpoint)
