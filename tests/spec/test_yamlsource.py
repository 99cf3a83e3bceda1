"""Reading with libyaml's parser must give exactly what the pure-Python reading gives, positions included.

``yamlsource.parse`` keeps libyaml's result only when it found no problem; these tests compare both
readings on generated and real files, so a file never loads differently (or at other positions)
because the fast parser read it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.spec import yamlsource

pytestmark = pytest.mark.skipif(not yamlsource._HAS_LIBYAML, reason="PyYAML built without libyaml")

REPO = Path(__file__).parents[2]
SPECS = [REPO / "mlops.yaml", REPO / "pipeline/gitops/templates/repo/mlops.yaml",
         *sorted((Path(__file__).parent / "invalid").glob("*.yaml"))]
# YAML punctuation, indentation, line breaks YAML counts (CR, NEL, LS, PS) and characters outside ASCII and
# the BMP, so that columns after multi-byte characters and odd line breaks are compared too
pieces = list("ab1:-[]{},&*!|>?#'\"\n \t.%@~0_=") + [
    "<<", "!!int ", "&a ", "*a", "\n  ", "\r\n", "\r", "\x85", "\u2028", "é", "中", "😀", "\ufeff", "key: ", "- ",
    "\n- ",
    " #", "|\n  x", ">-\n  y", "'a''b'", '"\\x41"', "---\n", "http://h?x=1", "{a: ", "}", "[b, "]
yamlish = st.lists(st.sampled_from(pieces), max_size=60).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=25)


def assert_same_reading(text: str) -> None:
    fast = yamlsource._fast_reading(text, "mlops.yaml")
    if fast is None:
        return  # parse() reads such text with the Python parser only
    python = yamlsource._parse(text, "mlops.yaml", yamlsource._Loader)
    assert python.problems == []
    assert fast.data == python.data
    assert fast.values == python.values
    assert fast.keys == python.keys


@settings(max_examples=400, deadline=None)
@given(text=yamlish)
def test_yaml_like_text_reads_the_same(text: str):
    assert_same_reading(text)


@settings(max_examples=150, deadline=None)
@given(data=structures, flow=st.booleans(), width=st.sampled_from([20, 80]))
def test_dumped_structures_read_the_same(data, flow: bool, width: int):
    assert_same_reading(yaml.safe_dump({"version": 1, "models": data}, default_flow_style=flow, width=width,
                                       allow_unicode=True))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: str(p.relative_to(REPO)))
def test_example_and_corpus_files_read_the_same(spec: Path):
    raw = spec.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pytest.skip("not UTF-8: refused before parsing")
    assert_same_reading(text)


def test_parse_keeps_the_python_wording_and_position_of_problems():
    text = "version: 1\nmodels:\n  a: {path: x}\n  a: {path: y}\n  b: [1, 2\n"
    python = yamlsource._parse(text, "mlops.yaml", yamlsource._Loader)
    assert yamlsource.parse(text, "mlops.yaml").problems == python.problems != []
