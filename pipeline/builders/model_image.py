"""Model images: an environment image plus one thin layer holding a model version.

Targets whose pods pull images (Kubernetes) cannot mount the registry's verified folder on this
machine, so the model is baked in: ``FROM <environment image by digest>``, one ``COPY`` of the
version's files to the target's model folder (owned by root, read-only), labels, nothing else. The
tag ``<repository>/mlops-model-<model>:<version>-<12 hex model digest>-<12 hex environment manifest>``
names the content (the environment by the registry's manifest digest, which the ``FROM`` line pins), so
the same model on the same environment image is never built twice (the registry, then the engine, is
asked first), a model-only change builds only this layer on the environment image that already
exists, and ``find`` names both images from the registry alone, building nothing (``mlops render``).
The result is ``repository@sha256:<manifest digest>`` as the registry reports it: what the pods pull
is exactly what was built.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.builders import MODEL_LABEL, PROJECT_LABEL, ImageBuilder, remove_leftovers
from pipeline.builders.base import image_exists
from pipeline.errors import BuildError
from pipeline.registry.base import derived_folder  # an image keeps them where the registry does: beside the model

MODEL_VERSION_LABEL = "mlops.model-version"
MODEL_DIGEST_LABEL = "mlops.model-digest"
ENVIRONMENT_IMAGE_LABEL = "mlops.environment-image"
_REPOSITORY_PART = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ModelLayer:
    """One model version as it goes into an image."""

    name: str
    version: int
    digest: str  # the registry's content digest (sha256:...)
    path: Path  # the verified, materialized folder
    flavor: str = ""


def _hex12(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def model_image_ref(repository: str, model: str, version: int, model_digest: str, environment: str) -> str:
    """``<repository>/mlops-model-<model>:<version>-<12 hex model>-<12 hex environment manifest digest>``."""
    name = _REPOSITORY_PART.sub("-", model.lower()).strip("-") or "model"
    return f"{repository.rstrip('/')}/mlops-model-{name}:{version}-{_hex12(model_digest)}-{_hex12(environment)}"


def repository_of(ref: str) -> str:
    """``host:port/name:tag`` → ``host:port/name`` (a port is not a tag)."""
    ref = ref.split("@", 1)[0]
    head, _, tail = ref.rpartition(":")
    return head if head and "/" not in tail else ref


def dockerfile(base: str, model_dir: str, labels: dict[str, str], tail: str = "") -> str:
    return (f"FROM {base}\n"
            f"COPY model {model_dir}\n"
            + "".join(f'LABEL {key}="{value}"\n' for key, value in sorted(labels.items())) + tail)


def context(base: str, model_dir: str, labels: dict[str, str], folder: Path, *,
            files: dict[str, bytes] | None = None, tail: str = "") -> io.BytesIO:
    """The build context: the Dockerfile and the model's regular files, read-only for everyone, owned
    by root, with fixed times (the same version always makes the same layer). ``files`` and ``tail``
    (Dockerfile lines after the labels) let an exported image add its start script without another copy
    of this layer's rules."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add(name: str, data: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uid, info.gid = 0, mode, 0, 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", dockerfile(base, model_dir, labels, tail).encode(), 0o644)
        for name, data in sorted((files or {}).items()):
            add(name, data, 0o444)
        add("model", None, 0o555)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise BuildError(f"model folder {folder} holds a symbolic link ({relative}); not baked into an image")
            add(f"model/{relative}", None if path.is_dir() else path.read_bytes(), 0o555 if path.is_dir() else 0o444)
    buffer.seek(0)
    return buffer


class ModelImages:
    """Builds and pushes model images for one target (its engine and ``image_repository``)."""

    def __init__(self, images: ImageBuilder, repository: str, host: str | None, model_dir: str):
        self.images, self.repository, self.host, self.model_dir = images, repository, host, model_dir
        self.builds = 0

    @property
    def client(self):
        return self.images.client_for(self.host)

    def registry_digest(self, ref: str) -> str | None:
        """The manifest digest the registry holds for ``ref``, or None when it has no such tag."""
        import docker

        try:
            return self.client.images.get_registry_data(ref).id
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as error:
            if error.status_code in (404, 403, 401) or "not found" in str(error).lower():
                return None
            raise BuildError(f"cannot ask the image repository about {ref}: {error.explanation or error}") from None

    def environment(self, env_ref: str) -> str:
        """The environment image by its manifest digest, pushed when the registry lacks this build."""
        import docker

        client = self.client
        try:
            local = client.images.get(env_ref)
        except docker.errors.ImageNotFound:
            if self.registry_digest(env_ref) is None:
                raise BuildError(f"environment image {env_ref} is neither on the engine nor in the image repository; "
                                 "mlops apply builds it") from None
            local = client.images.pull(env_ref)
        repository = repository_of(env_ref)
        pushed = {d.split("@", 1)[1] for d in local.attrs.get("RepoDigests") or [] if d.startswith(repository + "@")}
        digest = self.registry_digest(env_ref)
        if digest is None or digest not in pushed:
            digest = self.images.push(env_ref, client=client)
        return f"{repository}@{digest}"

    def find(self, env_ref: str, model: ModelLayer | None) -> tuple[str | None, str | None]:
        """(the environment image, the model image), each by digest when the image repository already
        holds it, else None; nothing is built, pushed or pulled. ``model`` None: not registered yet."""
        digest = self.registry_digest(env_ref)
        if digest is None:
            return None, None
        environment = f"{repository_of(env_ref)}@{digest}"
        if model is None:
            return environment, None
        ref = model_image_ref(self.repository, model.name, model.version, model.digest, digest)
        found = self.registry_digest(ref)
        return environment, f"{repository_of(ref)}@{found}" if found else None

    def build(self, env_ref: str, model: ModelLayer) -> str:
        """The model image for ``model`` on ``env_ref``, built and pushed only when missing; returns
        ``repository@sha256:<manifest digest>``."""
        base = self.environment(env_ref)
        ref = model_image_ref(self.repository, model.name, model.version, model.digest, base.split("@", 1)[1])
        repository = repository_of(ref)
        digest = self.registry_digest(ref)
        if digest is None:
            if not image_exists(self.client, ref):
                self._build(ref, base, env_ref, model)
            digest = self.images.push(ref, client=self.client)
        return f"{repository}@{digest}"

    def build_local(self, ref: str, env_ref: str, model: ModelLayer, *, labels: dict[str, str] | None = None,
                    files: dict[str, bytes] | None = None, tail: str = "") -> str:
        """The model image ``ref`` on the local environment image ``env_ref``, built on this engine when
        missing and never pushed (``mlops export`` ships it as a file); returns ``ref``."""
        if not image_exists(self.client, ref):
            self._build(ref, env_ref, env_ref, model, labels=labels, files=files, tail=tail)
        return ref

    def _build(self, ref: str, base: str, env_ref: str, model: ModelLayer, *, labels: dict[str, str] | None = None,
               files: dict[str, bytes] | None = None, tail: str = "") -> None:
        project = self.images.spec.project_id()
        labels = {**(labels or {}), PROJECT_LABEL: project, MODEL_LABEL: model.name,
                  MODEL_VERSION_LABEL: str(model.version), MODEL_DIGEST_LABEL: model.digest,
                  ENVIRONMENT_IMAGE_LABEL: env_ref}
        self.builds += 1
        self.images.progress(f"building {ref} (the model {model.name}:{model.version} on {env_ref})")
        derived = self._linear_form(base, model)
        if derived:
            files, tail = {**(files or {}), **derived}, f"COPY derived {derived_folder(Path(self.model_dir))}\n{tail}"
        build_context = context(base, self.model_dir, labels, model.path, files=files, tail=tail)
        try:
            for chunk in self.client.api.build(fileobj=build_context,
                                               custom_context=True, tag=ref, rm=True, forcerm=True, decode=True):
                if "error" in chunk:
                    raise BuildError(f"building {ref} failed: {chunk['error'].strip()}")
        except BuildError:
            raise
        except Exception as error:  # the SDK's API and connection errors
            raise BuildError(f"building {ref} failed: {getattr(error, 'explanation', None) or error}") from None
        finally:
            remove_leftovers(self.client, project)


    def _linear_form(self, base: str, model: ModelLayer) -> dict[str, bytes]:
        """``derived/<file>`` of the model's linear form (``pipeline.runtime.linear``), computed in a container
        of the environment image, without network: the form must be checked with the libraries the image
        serves with, not this machine's. Best effort: none (the service then loads through scikit-learn)
        for another flavor or model, or when the container fails."""
        if model.flavor != "sklearn":
            return {}
        import docker

        script = "import sys; from pipeline.runtime.linear import keep; print(keep(sys.argv[1], sys.argv[2]))"
        client, container = self.client, None
        try:
            container = client.containers.create(
                base, ["python", "-c", script, "/tmp/mlops-model", "/tmp/mlops-derived"], network_disabled=True,
                environment={"PYTHONDONTWRITEBYTECODE": "1"}, labels={PROJECT_LABEL: self.images.spec.project_id()})
            container.put_archive("/tmp", _folder_tar(model.path, "mlops-model"))
            container.start()
            if container.wait(timeout=300).get("StatusCode") != 0:
                said = container.logs().decode(errors="replace").strip()
                self.images.progress(f"no linear form in the image: {said[-300:]}")
                return {}
            try:
                stream, _ = container.get_archive("/tmp/mlops-derived")
            except docker.errors.NotFound:
                return {}
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                return {f"derived/{Path(member.name).name}": tar.extractfile(member).read()  # type: ignore[union-attr]
                        for member in tar.getmembers() if member.isfile() and member.name.endswith(".npz")
                        and not Path(member.name).name.startswith(".")}
        except Exception as error:  # the SDK's API, connection and timeout errors, a torn archive: none kept
            self.images.progress(f"no linear form in the image: {type(error).__name__}: {error}")
            return {}
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.DockerException:
                    pass


def _folder_tar(folder: Path, name: str) -> bytes:
    """``folder``'s regular files under ``name/``, as a tar for ``put_archive``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=name)
    return buffer.getvalue()


def model_layer(model) -> ModelLayer:
    """A target's resolved model (``targets.base.ResolvedModel``, read by its fields) as a layer."""
    return ModelLayer(model.name, model.version, model.digest, Path(model.path), model.flavor)
