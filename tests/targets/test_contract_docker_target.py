"""The Docker target (containers on a real engine) passes the target contract.

Needs an engine (``DOCKER_HOST``); skipped without one unless ``MLOPS_REQUIRE_DOCKER=1``. The
environment image is built once for the module and removed afterwards unless it existed before;
containers are removed by deleting the endpoint after each test.
"""

from __future__ import annotations

import os

import pytest

from pipeline.builders import image_ref
from pipeline.cli.wiring import make_targets
from pipeline.plan.model import BuildData
from pipeline.registry import open_registry
from pipeline.spec.loader import load
from tests.targets.contract import Harness, TargetContract, write_repository

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ENVIRONMENT = "sklearn"


def docker_repository(root, base: str):
    return load(write_repository(root, f'{{type: docker, base_image: "{base}"}}', ENVIRONMENT))


@pytest.fixture(scope="module")
def image(tmp_path_factory, docker_engine):
    """The environment image the deployments run, built on the engine (reused when it exists)."""
    import docker

    from pipeline.builders import ImageBuilder

    base = os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")
    spec = docker_repository(tmp_path_factory.mktemp("image"), base)
    builder = ImageBuilder(spec, spec.state_dir(), progress=lambda line: None)
    ref = image_ref(ENVIRONMENT, builder.context(ENVIRONMENT, base).digest())
    existed = builder.exists(ref)
    builder.build(ENVIRONMENT, BuildData(ENVIRONMENT, ref, "", "docker", repository=None, base_image=base))
    yield base, ref
    if not existed:  # only the image this module built
        try:
            builder.client.images.remove(ref)
        except docker.errors.APIError:
            pass  # in use by someone else's container: theirs now


@pytest.fixture
def harness(tmp_path, image):
    base, ref = image
    spec = docker_repository(tmp_path, base)
    target = make_targets(spec, spec.state_dir())["under-test"]
    registry = open_registry(spec.registry.path, root=spec.root)
    harness = Harness(tmp_path, target, registry, image=ref)
    yield harness
    harness.cleanup()
    registry.close()


class TestDockerTarget(TargetContract):
    pass
