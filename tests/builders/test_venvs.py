"""Environment venvs: built once per content hash, complete or absent, isolated, serving ``pipeline``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.builders.venvs import MARKER, VenvBuilder, environment_digest
from pipeline.errors import BuildError
from pipeline.spec.loader import load

SPEC = """\
version: 1
environments:
  small: {{python: "{python}", requirements: requirements.txt}}
targets:
  local: {{type: local}}
endpoints:
  api:
    target: local
    traffic: {{blue: 100}}
    deployments:
      blue: {{model: m, environment: small}}
models:
  m: {{path: model.txt, flavor: python}}
"""


def make_spec(root: Path, requirements: str, python: str = "3.11"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "requirements.txt").write_text(requirements)
    (root / "model.txt").write_text("x")
    (root / "mlops.yaml").write_text(SPEC.format(python=python))
    return load(root / "mlops.yaml")


def run(python: Path, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd="/")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real build of ``six`` (over a leftover half-built folder), shared by the slow tests."""
    root = tmp_path_factory.mktemp("venvs")
    spec = make_spec(root / "repo", "six\n")
    builder = VenvBuilder(spec, root / "state")
    leftover = builder.path(builder.ref("small", environment_digest(spec, "small")))
    leftover.mkdir(parents=True)
    (leftover / "junk-from-a-killed-build").write_text("")
    started = time.monotonic()
    ref = builder.build("small")
    print(f"first build: {time.monotonic() - started:.1f}s")
    return spec, builder, ref


@pytest.mark.slow
def test_built_venv_serves_pipeline_with_its_requirements(built):
    _, builder, ref = built
    result = run(builder.python(ref), "import pipeline.server, six")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_built_venv_does_not_see_what_mlops_itself_has_installed(built):
    _, builder, ref = built
    result = run(builder.python(ref), "import docker")
    assert "No module named 'docker'" in result.stderr


@pytest.mark.slow
def test_second_build_is_a_fast_noop_with_the_same_ref(built):
    spec, first, ref = built
    again = VenvBuilder(spec, first.root.parent)
    started = time.monotonic()
    assert again.build("small") == ref
    print(f"no-op build: {time.monotonic() - started:.3f}s")
    assert again.builds == 0 and time.monotonic() - started < 1


@pytest.mark.slow
def test_a_leftover_half_built_folder_is_replaced(built):
    _, builder, ref = built
    assert not (builder.path(ref) / "junk-from-a-killed-build").exists()
    assert builder.python(ref).exists()


KILLED_BUILD = """
import sys
from pathlib import Path
from pipeline.builders.venvs import VenvBuilder
from pipeline.spec.loader import load
VenvBuilder(load(Path(sys.argv[1])), Path(sys.argv[2])).build("small")
"""


@pytest.mark.slow
def test_a_build_killed_while_pip_runs_is_redone_by_the_next_one(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n")
    builder = VenvBuilder(spec, tmp_path / "state")
    ref = builder.ref("small", environment_digest(spec, "small"))
    killed = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(spec.root / "mlops.yaml"),
                               str(tmp_path / "state")])
    while not (builder.path(ref) / "mlops-service-requirements.txt").exists() and killed.poll() is None:
        time.sleep(0.05)
    killed.kill()  # SIGKILL: its pip lives on, orphaned, and still holds the lock
    killed.wait()
    assert builder.build("small") == ref and builder.builds == 1
    assert run(builder.python(ref), "import six").returncode == 0


@pytest.mark.slow
def test_observe_reports_the_complete_venv(built):
    spec, builder, ref = built
    digests, _, refs = builder.observe(spec)
    assert digests == {"local": {"small": environment_digest(spec, "small")}} and refs == {ref}


@pytest.mark.slow
def test_bad_requirement_fails_with_pips_message_and_leaves_nothing(tmp_path):
    spec = make_spec(tmp_path / "repo", "no-such-package-xyz==1.0\n")
    builder = VenvBuilder(spec, tmp_path / "state")
    with pytest.raises(BuildError, match="no-such-package-xyz") as error:
        builder.build("small")
    assert "No matching distribution" in str(error.value) or "not found" in str(error.value)
    assert list(builder.root.iterdir()) == [builder.root / ".lock"]


@pytest.mark.slow
def test_concurrent_builds_of_one_environment_build_it_once(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n")
    builders = [VenvBuilder(spec, tmp_path / "state") for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        refs = list(pool.map(lambda builder: builder.build("small"), builders))
    assert refs[0] == refs[1] and sum(b.builds for b in builders) == 1
    assert run(builders[0].python(refs[0]), "import six").returncode == 0


def test_digest_changes_exactly_when_the_requirements_text_does(tmp_path):
    spec = make_spec(tmp_path, "six\n")
    first = environment_digest(spec, "small")
    assert environment_digest(spec, "small") == first
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    assert environment_digest(spec, "small") != first


def test_observe_ignores_a_folder_without_its_marker(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n")
    builder = VenvBuilder(spec, tmp_path / "state")
    builder.path(builder.ref("small", environment_digest(spec, "small"))).mkdir(parents=True)
    assert builder.observe(spec)[2] == frozenset()


def test_missing_python_fails_naming_what_was_asked_and_what_exists(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n", python="3.99")
    builder = VenvBuilder(spec, tmp_path / "state")
    with pytest.raises(BuildError, match=r"asks for Python 3\.99.*found: .*3\.11"):
        builder.build("small")
    assert not any(p.is_dir() for p in builder.root.iterdir())


def test_a_plan_made_for_other_requirements_is_refused(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n")
    with pytest.raises(BuildError, match="changed since the plan"):
        VenvBuilder(spec, tmp_path / "state").build("small", SimpleNamespace(digest="sha256:" + "0" * 64))


def test_a_conda_file_is_refused(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n")
    (tmp_path / "repo" / "conda.yaml").write_text("dependencies: [six]\n")
    environment = dataclasses.replace(spec.environments["small"], conda_file="conda.yaml")
    spec = dataclasses.replace(spec, environments={"small": environment})
    with pytest.raises(BuildError, match="conda_file"):
        VenvBuilder(spec, tmp_path / "state").build("small")


def test_collect_garbage_keeps_only_the_given_complete_venvs(tmp_path):
    spec = make_spec(tmp_path / "repo", "six\n")
    builder = VenvBuilder(spec, tmp_path / "state")
    keep, old, half = (builder.ref("small", f"sha256:{c * 12}") for c in "abc")
    for ref in (keep, old):
        builder.path(ref).mkdir(parents=True)
        (builder.path(ref) / MARKER).write_text(json.dumps({}))
    builder.path(half).mkdir()
    assert builder.collect_garbage({keep, half}) == [old]
    assert builder.built() == [keep] and not builder.path(half).exists()
