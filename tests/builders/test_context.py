"""Build contexts are deterministic, their digest changes exactly with what the image holds, and the
image never carries the wheels it was installed from."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.builders import Context, ImageBuilder, collect_garbage
from pipeline.builders.base import apt_mirror, base_tag
from pipeline.builders.progress import BuildProgress
from pipeline.builders.wheels import pip_errors, wheels_key
from pipeline.errors import BuildError, MlopsError
from pipeline.spec.loader import load

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
    first = Context(spec, spec.environments["sk"], "base:1").digest()
    assert Context(spec, spec.environments["sk"], "base:1").digest() == first
    assert Context(spec, spec.environments["sk"], "base:2").digest() != first
    (tmp_path / "requirements.txt").write_text("numpy==2.4.7\n")
    assert Context(spec, spec.environments["sk"], "base:1").digest() != first


def test_tarball_is_byte_for_byte_repeatable(spec):
    context = Context(spec, spec.environments["sk"], "base:1")
    assert context.tarball({"a": "b"}).getvalue() == context.tarball({"a": "b"}).getvalue()


def test_wheels_are_installed_in_a_stage_the_image_does_not_inherit(spec):
    """A wheel layer in the image would add ~70 MB to every environment image."""
    dockerfile = Context(spec, spec.environments["sk"], "base:1").dockerfile
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "wheels" in dockerfile and "wheels" not in final_stage
    assert "COPY --from=mlops-venv /opt/mlops /opt/mlops" in final_stage


def test_every_stage_carries_the_project_label(spec):
    """A failed build's intermediate images are found (and removed) by this label only."""
    dockerfile = Context(spec, spec.environments["sk"], "base:1").dockerfile
    assert dockerfile.count(f'LABEL mlops.project="{spec.project_id()}"') == 1
    assert dockerfile.startswith(f'FROM base:1 AS mlops-base\nLABEL mlops.project="{spec.project_id()}"\n')


def test_base_tag_names_suite_and_packages():
    assert base_tag("bookworm") == base_tag("bookworm")
    assert base_tag("bookworm") != base_tag("trixie")
    assert base_tag("bookworm", ("python3",)) != base_tag("bookworm")


def test_apt_mirror_read_from_deb822_and_one_line_sources(tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
                      "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n")
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb [arch=amd64] http://old.example/debian bullseye main\n")
    assert apt_mirror("bookworm", [deb822]) == "http://mirror.example/debian"
    assert apt_mirror("bullseye", [deb822, one_line]) == "http://old.example/debian"


def test_wheel_cache_key_changes_with_requirements_and_python():
    key = wheels_key("3.11", ["a==1"])
    assert key == wheels_key("3.11", ["a==1"])
    assert key != wheels_key("3.11", ["a==2"]) and key != wheels_key("3.12", ["a==1"])


def test_pip_errors_keep_pips_own_error_lines():
    output = "Collecting x\n  Downloading x\nERROR: Could not find a version of nope\nERROR: No matching distribution\n"
    assert pip_errors(output) == "ERROR: Could not find a version of nope\nERROR: No matching distribution"


def test_progress_plain_lines_without_a_terminal():
    """CI logs get every build line; a terminal gets one rewritten status line."""
    plain = io.StringIO()
    BuildProgress(plain, tty=False)("Step 2/9 : RUN pip install")
    assert plain.getvalue() == "    Step 2/9 : RUN pip install\n"
    live = io.StringIO()
    progress = BuildProgress(live, tty=True)
    progress("Step 2/9 : RUN pip install")
    progress("Collecting numpy")
    progress.end()
    assert "\n" not in live.getvalue() and "step 2/9: RUN pip install | Collecting numpy" in live.getvalue()
    assert live.getvalue().endswith("\r\033[K")


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
    digest = "sha256:" + "d" * 64
    builder._clients[None] = FakeClient([{"status": "Pushed"}, {"aux": {"Tag": "0123456789ab", "Digest": digest}}])
    assert builder.push("registry.example.com/ml/mlops-env-sk:0123456789ab") == digest
    assert builder.client.api.calls == [("registry.example.com/ml/mlops-env-sk", "0123456789ab")]
    builder._clients[None] = FakeClient([{"error": "denied: requested access to the resource is denied"}])
    with pytest.raises(BuildError, match="denied.*logged in"):
        builder.push("registry.example.com/ml/mlops-env-sk:0123456789ab")


class FakeImage:
    def __init__(self, tag, environment, created):
        self.tags, self.id = [tag], f"sha256:{tag}"
        self.labels, self.attrs = {"mlops.environment": environment}, {"Created": created}


class FakeImages:
    def __init__(self, images):
        self.images, self.removed, self.filters = images, [], None

    def list(self, filters):
        self.filters = filters
        return list(self.images)

    def remove(self, ref):
        self.removed.append(ref)


def test_gc_keeps_the_newest_and_served_images_of_this_project(spec):
    images = FakeImages([FakeImage(f"mlops-env-sk:{n}", "sk", f"2026-01-0{n}") for n in range(1, 6)])
    client = type("Client", (), {"images": images})()
    removed = collect_garbage(spec, client, serving_images=["mlops-env-sk:1"], keep=2)
    assert removed == ["mlops-env-sk:3", "mlops-env-sk:2"]
    assert f"mlops.project={spec.project_id()}" in images.filters["label"]


HOSTED = """\
version: 1
registry: .mlops/registry
models:
  m: {path: model.py, flavor: python}
environments:
  sk: {requirements: requirements.txt}
targets:
  box: {type: docker, host: "unix:///nonexistent/mlops-test.sock"}
endpoints:
  e:
    target: box
    traffic: {d: 100}
    deployments:
      d: {model: m, environment: sk}
"""


def test_builder_uses_the_targets_host_not_docker_host(tmp_path, monkeypatch):
    """The schema's host: must reach the builder, or builds land on (or fail at) the wrong engine."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker-host.sock")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "model.py").write_text("def run(data):\n    return data\n")
    (tmp_path / "mlops.yaml").write_text(HOSTED)
    builder = ImageBuilder(load(tmp_path / "mlops.yaml"), tmp_path)
    with pytest.raises(MlopsError, match="at unix:///nonexistent/mlops-test.sock"):
        builder.observe(builder.spec)


def test_the_image_ships_the_scoring_service_and_router_only(spec, tmp_path):
    """No CLI, planner, executor or spec loader in a scoring image, and what is there imports alone."""
    names = [name for name, _ in Context(spec, spec.environments["sk"], "base:1").files if name.startswith("pipeline/")]
    assert "pipeline/server/app.py" in names and "pipeline/server/router.py" in names
    assert "pipeline/runtime/__init__.py" in names and "pipeline/errors.py" in names
    left_out = ("pipeline/cli/", "pipeline/plan/", "pipeline/apply/", "pipeline/spec/", "pipeline/builders/")
    assert not [name for name in names if name.startswith(left_out)]
    source = tmp_path / "image-src"
    for name, data in Context(spec, spec.environments["sk"], "base:1").files:
        if name.startswith("pipeline/"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(data)
    code = ("import pipeline, pipeline.server.app, pipeline.server.__main__, pipeline.server.router; "
            "print(pipeline.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(source)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(source / "pipeline" / "__init__.py")


class FakeModelImage(FakeImage):
    """A model image: the environment label inherited from its base, its model, the digest it was pushed as."""

    def __init__(self, tag, model, created):
        super().__init__(tag, "sk", created)
        self.labels = {**self.labels, "mlops.model": model}
        self.attrs["RepoDigests"] = [tag.rsplit(":", 1)[0] + "@sha256:" + tag.rsplit(":", 1)[1] * 8]


def test_gc_keeps_the_newest_and_served_model_images_per_model_and_removes_them_first(spec):
    repo = "registry.example.com/ml/"
    models = [FakeModelImage(f"{repo}mlops-model-iris:{n}", "iris", f"2026-02-0{n}") for n in range(1, 5)]
    others = [FakeModelImage(f"{repo}mlops-model-wine:{n}", "wine", f"2026-02-0{n}") for n in range(1, 3)]
    environments = [FakeImage(f"mlops-env-sk:{n}", "sk", f"2026-01-0{n}") for n in range(1, 4)]
    images = FakeImages(environments + models + others)
    client = type("Client", (), {"images": images})()
    pulled = models[0].attrs["RepoDigests"][0]  # what a cluster's pods pull: by digest, not by tag
    removed = collect_garbage(spec, client, serving_images=[pulled], keep=2)
    assert removed == [f"{repo}mlops-model-iris:2", "mlops-env-sk:1"]  # wine keeps its newest two
