"""Build contexts are deterministic and their digest changes exactly with what the image holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build import Context, ImageBuilder
from pipeline.errors import BuildError
from pipeline.spec import load

SPEC = """\
version: 1
environments:
  sk: {requirements: requirements.txt}
"""


@pytest.fixture
def spec(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text("numpy==2.4.6\n")
    (tmp_path / "mlops.yaml").write_text(SPEC)
    return load(tmp_path / "mlops.yaml")


def test_same_environment_same_digest_and_requirements_change_it(spec, tmp_path):
    first = Context(spec, spec.environments["sk"], "base:1", None).digest()
    assert Context(spec, spec.environments["sk"], "base:1", None).digest() == first
    assert Context(spec, spec.environments["sk"], "base:2", None).digest() != first
    (tmp_path / "requirements.txt").write_text("numpy==2.4.7\n")
    assert Context(spec, spec.environments["sk"], "base:1", None).digest() != first


def test_tarball_is_byte_for_byte_repeatable(spec):
    context = Context(spec, spec.environments["sk"], "base:1", None)
    assert context.tarball({"a": "b"}).getvalue() == context.tarball({"a": "b"}).getvalue()


class FakeAPI:
    def __init__(self, chunks):
        self.chunks, self.calls = chunks, []

    def push(self, repository, tag, stream, decode):
        self.calls.append((repository, tag))
        return iter(self.chunks)


class FakeClient:
    def __init__(self, chunks):
        self.api = FakeAPI(chunks)


def test_push_sends_repository_and_tag_and_reports_refusals(spec, tmp_path):
    builder = ImageBuilder(spec, tmp_path)
    builder._client = FakeClient([{"status": "Pushed"}])
    builder.push("registry.example.com/ml/mlops-env-sk:0123456789ab")
    assert builder.client.api.calls == [("registry.example.com/ml/mlops-env-sk", "0123456789ab")]
    builder._client = FakeClient([{"error": "denied: requested access to the resource is denied"}])
    with pytest.raises(BuildError, match="denied.*logged in"):
        builder.push("registry.example.com/ml/mlops-env-sk:0123456789ab")
