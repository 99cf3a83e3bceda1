"""mlops validate runs on any pull request: no input may crash it, exhaust it, or hide its errors."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli.main import cli
from pipeline.errors import MlopsError, SpecError
from pipeline.spec.loader import load

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=40)
# text made of YAML's own punctuation, so that anchors, aliases, tags, merges and flow collections appear
yamlish = st.lists(st.sampled_from(list("ab1:-[]{},&*!<>|?#'\"\n \t.%@`~0x_=") + ["<<", "!!int ", "&a ", "*a", "\n  "]),
                   max_size=80).map("".join)


def loads_within_bounds(path: Path) -> None:
    """Load the file: success or a user error only, in under a second and 100 MB."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        load(path)
    except MlopsError:
        pass
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 100 * 1024 * 1024, (elapsed, peak)


@SETTINGS
@given(raw=st.binary(max_size=500))
def test_arbitrary_bytes_never_crash(tmp_path: Path, raw: bytes):
    (tmp_path / "mlops.yaml").write_bytes(raw)
    loads_within_bounds(tmp_path / "mlops.yaml")


@SETTINGS
@given(text=yamlish)
def test_yaml_like_text_never_crashes(tmp_path: Path, text: str):
    (tmp_path / "mlops.yaml").write_text(text)
    loads_within_bounds(tmp_path / "mlops.yaml")


@SETTINGS
@given(data=structures)
def test_arbitrary_structures_never_crash(tmp_path: Path, data):
    (tmp_path / "mlops.yaml").write_text(yaml.safe_dump({"version": 1, "models": data, "endpoints": data}))
    loads_within_bounds(tmp_path / "mlops.yaml")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=1, max_size=200))
def test_validate_refuses_garbage_with_a_positioned_message(tmp_path: Path, raw: bytes):
    """Anything that is not a valid spec exits 1 with file:line:column, never a traceback."""
    path = tmp_path / "mlops.yaml"
    path.write_bytes(b"version: 1\nmodels: " + raw)
    try:
        load(path)
    except SpecError:
        pass
    else:
        return  # a few byte strings are valid YAML making a valid spec
    result = CliRunner().invoke(cli, ["--file", str(path), "validate"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and f"{path}:" in result.output


def test_a_22_mb_file_is_refused_by_size_within_a_second(tmp_path: Path):
    path = tmp_path / "mlops.yaml"
    path.write_text("version: 1\nmodels:\n" + "  m: {path: x, flavor: sklearn}\n" * 700_000)
    start = time.perf_counter()
    with pytest.raises(SpecError) as raised:
        load(path)
    assert time.perf_counter() - start < 1.0
    assert "larger than 1 MiB" in str(raised.value)


def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path):
    """--debug is how a maintainer sees where an error came from."""
    path = tmp_path / "mlops.yaml"
    path.write_bytes(b"version: 1\x00\n")
    result = CliRunner().invoke(cli, ["--debug", "--file", str(path), "plan"])
    assert isinstance(result.exception, SpecError)
