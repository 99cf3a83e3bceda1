"""A failing build on a real engine: one error with the failing step's own output, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.builders import ImageBuilder
from pipeline.builders.base import default_base
from pipeline.errors import BuildError
from pipeline.plan.model import BuildData
from pipeline.spec.loader import load

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SPEC = """\
version: 1
environments:
  broken: {dockerfile: Dockerfile}
"""


@pytest.fixture
def client(docker_engine):
    if not default_base() or not docker_engine.images.list(name=default_base()):
        pytest.skip("the local base image is not on the engine (mlops images base)")
    return docker_engine


def test_failed_build_raises_once_and_leaves_no_image(client, tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(f"FROM {default_base()}\nRUN mkdir /big && echo the-step-output && exit 3\n")
    (tmp_path / "mlops.yaml").write_text(SPEC)
    spec = load(tmp_path / "mlops.yaml")
    lines = []
    builder = ImageBuilder(spec, tmp_path, progress=lines.append)
    with pytest.raises(BuildError, match=r"(?s)failed at Step 3/.*non-zero code: 3.*the-step-output"):
        builder._build_on(client, "broken", BuildData("broken", "mlops-env-broken:test", "", "docker"))
    assert any("Step 3/" in line for line in lines)  # progress was streamed while it ran
    assert client.images.list(all=True, filters={"label": f"mlops.project={spec.project_id()}"}) == []
