"""The kinds of deployment target and what each needs: the one table every decision reads.

Adding a target type means adding a row here and its adapter module; no other code compares type
strings (as pre-commit registers its languages in one dict). The table sits in ``spec`` because
both the validator and the pure planner read it; adapters are named by import path, so reading
the table imports no SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EnvironmentKind(StrEnum):
    """How a deployment's environment is built for a target."""

    VENV = "venv"  # a virtual environment on this machine, built once per content hash
    IMAGE = "image"  # a container image, built once per content hash


class KeyStore(StrEnum):
    """Where an endpoint's keys live."""

    FILE = "file"  # a 0600 file in the state folder on this machine
    SECRET = "secret"  # a secret object where the endpoint runs


@dataclass(frozen=True)
class TargetKind:
    name: str
    adapter: str | None  # "module:Class" of the Target adapter; None: not supported by this version yet
    environment: EnvironmentKind
    needs_environment: bool  # every deployment must name an environment (it runs in an image)
    needs_image_repository: bool  # images are pushed to a repository the target pulls from
    keys: KeyStore
    # where the model sits inside the image its pods pull (a thin layer on the environment image, built at
    # deploy); None: the target mounts the registry's folder, and a model change builds nothing
    model_dir: str | None = None
    # what the scoring services collect is shipped to a sink in the target (read back by the adapter's
    # ``collected``), not left in this machine's ``.mlops/data`` (where ``mlops monitor`` reads it)
    remote_collection: bool = False
    # deployments are bundles written to a folder for devices (``mlops export``'s), not services: the plan
    # shows export steps, there is no endpoint to create and no traffic to split
    exports: bool = False


TARGET_KINDS: dict[str, TargetKind] = {
    "local": TargetKind("local", "pipeline.targets.local:LocalTarget", EnvironmentKind.VENV,
                        needs_environment=False, needs_image_repository=False, keys=KeyStore.FILE),
    "docker": TargetKind("docker", "pipeline.targets.docker:DockerTarget", EnvironmentKind.IMAGE,
                         needs_environment=True, needs_image_repository=False, keys=KeyStore.FILE),
    "kubernetes": TargetKind("kubernetes", "pipeline.targets.kubernetes.adapter:KubernetesTarget",
                             EnvironmentKind.IMAGE,
                             needs_environment=True, needs_image_repository=True, keys=KeyStore.SECRET,
                             model_dir="/var/lib/mlops/model", remote_collection=True),
    "edge": TargetKind("edge", "pipeline.targets.edge:EdgeTarget", EnvironmentKind.IMAGE,
                       needs_environment=True, needs_image_repository=False, keys=KeyStore.FILE, exports=True),
}


def supported() -> list[str]:
    """The target types this version can deploy to."""
    return [name for name, kind in TARGET_KINDS.items() if kind.adapter]
