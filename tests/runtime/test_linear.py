"""The linear form of scikit-learn models: the same bits as scikit-learn, kept only when it is, and loaded
without importing scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from pipeline.runtime import linear, load_model
from pipeline.runtime.flavors import SklearnModel

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(11)
X = RNG.normal(2.0, 3.0, size=(400, 6))
LABELS = np.digitize(X[:, 0], [1.0, 3.0])  # three classes
TARGET = X @ np.arange(1.0, 7.0) + 0.5

ESTIMATORS = {
    "binary, fitted on a DataFrame": lambda: LogisticRegression().fit(
        pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]), LABELS > 0),
    "multinomial": lambda: LogisticRegression(max_iter=500).fit(X, LABELS),
    "string labels": lambda: LogisticRegression().fit(X, np.where(LABELS > 0, "fraud", "ok")),
    "linear regression": lambda: LinearRegression().fit(X, TARGET),
    "ridge, two targets": lambda: Ridge().fit(X, np.column_stack([TARGET, -TARGET])),
    "lasso": lambda: Lasso(alpha=0.1).fit(X, TARGET),
    "elastic net": lambda: ElasticNet(alpha=0.1).fit(X, TARGET),
    "scaled logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(X, LABELS),
    "two scalers, ridge": lambda: make_pipeline(StandardScaler(with_mean=False), StandardScaler(with_std=False),
                                                Ridge()).fit(X, TARGET),
}


def saved(estimator, folder: Path) -> Path:
    folder.mkdir(parents=True)
    sio.dump(estimator, folder / "model.skops")
    return folder


def rows(count: int) -> dict[str, np.ndarray]:
    return {"input-0": RNG.normal(2.0, 30.0, size=(count, 6))}


@pytest.mark.parametrize("what", list(ESTIMATORS))
def test_the_kept_form_answers_as_scikit_learn_bit_for_bit(what, tmp_path):
    folder = saved(ESTIMATORS[what](), tmp_path / "model")
    kept = linear.cache_file(tmp_path / "derived")
    through_sklearn = load_model(folder, "sklearn", derived_dir=kept.parent)
    assert isinstance(through_sklearn, SklearnModel) and kept.is_file()
    again = load_model(folder, "sklearn", derived_dir=kept.parent)
    assert isinstance(again, linear.LinearModel)
    assert (again.describe(), again.columns, again.allow_nan, again.class_labels()) == \
           (through_sklearn.describe(), through_sklearn.columns, through_sklearn.allow_nan,
            through_sklearn.class_labels())
    outputs = [spec.name for spec in through_sklearn.outputs]
    for count in (1, 7, 10_000):
        batch = rows(count)
        expected = through_sklearn.predict({"input-0": batch["input-0"].copy()}, outputs)
        actual = again.predict(batch, outputs)
        for name in outputs:
            assert actual[name].dtype == expected[name].dtype and actual[name].shape == expected[name].shape
            assert actual[name].tobytes() == expected[name].tobytes(), f"{name} differs on {count} rows"


FINITE = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def fitted_by_hand(draw):
    """A LogisticRegression or Ridge with drawn coefficients (no fit: any shape and scale), optionally after
    a StandardScaler, and rows to score."""
    width = draw(st.integers(1, 6))
    classes = draw(st.sampled_from([0, 2, 3, 5]))  # 0: a regressor
    estimator = LogisticRegression() if classes else Ridge()
    shape = (1 if classes == 2 else classes, width) if classes else (width,)
    estimator.coef_ = draw(arrays(np.float64, shape, elements=FINITE))
    estimator.intercept_ = draw(arrays(np.float64, (shape[0],) if classes else (), elements=FINITE))
    if classes:
        estimator.classes_ = np.arange(classes) * 10
    estimator.n_features_in_ = width
    scalers = []
    if draw(st.booleans()):
        scaler = StandardScaler()
        scaler.mean_ = draw(arrays(np.float64, width, elements=FINITE))
        scaler.scale_ = draw(arrays(np.float64, width, elements=st.floats(1e-3, 1e3)))
        scaler.var_, scaler.n_features_in_, scaler.n_samples_seen_ = scaler.scale_ ** 2, width, 10
        scalers = [(scaler.mean_, scaler.scale_)]
        estimator = make_pipeline(scaler, estimator)
    rows = draw(arrays(np.float64, (draw(st.integers(1, 40)), width), elements=FINITE))
    return estimator, scalers, rows


@settings(max_examples=300, deadline=None)
@given(fitted_by_hand())
def test_the_linear_form_replicates_scikit_learn_for_any_coefficients(case):
    estimator, scalers, rows = case
    final = estimator[-1] if scalers else estimator
    classifier = hasattr(final, "classes_")
    form = linear.LinearModel(Path("."), {}, "classifier" if classifier else "regressor", final.coef_,
                              np.asarray(final.intercept_), final.classes_ if classifier else None, scalers)
    expected, actual = estimator.predict(rows.copy()), form._predict(rows.copy())
    assert expected.dtype == actual.dtype and expected.tobytes() == actual.tobytes()
    if classifier:
        expected, actual = estimator.predict_proba(rows.copy()), form._predict_proba(rows.copy())
        assert expected.dtype == actual.dtype and expected.tobytes() == actual.tobytes()


def test_a_kept_model_loads_and_scores_without_importing_scikit_learn(tmp_path):
    folder = saved(ESTIMATORS["scaled logistic regression"](), tmp_path / "model")
    kept = linear.cache_file(tmp_path / "derived")
    load_model(folder, "sklearn", derived_dir=kept.parent)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pipeline.runtime import load_model
        model = load_model(Path({str(folder)!r}), "sklearn", derived_dir=Path({str(kept.parent)!r}))
        payload, _, _ = model.prepare_rows([[1, 2, 3, 4, 5, 6]])
        model.predict(payload, ["predict", "predict_proba"])
        print(type(model).__name__, "sklearn" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split() == ["LinearModel", "False"]


class Tweaked(LogisticRegression):
    def predict(self, X):
        return super().predict(X)


@pytest.mark.parametrize("estimator", [
    Tweaked().fit(X, LABELS),  # a subclass may answer otherwise
    make_pipeline(MinMaxScaler(), LogisticRegression()).fit(X, LABELS),
    make_pipeline(StandardScaler(copy=False), LogisticRegression()).fit(X, LABELS),  # scales the caller's rows
    LogisticRegression().fit(X, LABELS > 0).sparsify(),
], ids=["subclass", "other step", "in-place scaler", "sparse coefficients"])
def test_models_without_a_linear_form_are_left_to_scikit_learn(estimator, tmp_path):
    model = load_model(saved(LogisticRegression().fit(X, LABELS), tmp_path / "model"), "sklearn")
    assert linear.from_estimator(model, estimator) is None


def test_a_model_that_lets_nan_through_keeps_no_linear_form(tmp_path):
    folder = saved(ESTIMATORS["multinomial"](), tmp_path / "model")
    (folder / "model.json").write_text('{"allow_nan": true}')  # scikit-learn refuses NaN itself; the form would not
    kept = linear.cache_file(tmp_path / "derived")
    assert isinstance(load_model(folder, "sklearn", derived_dir=kept.parent), SklearnModel) and not kept.exists()


def test_a_form_that_answers_differently_is_not_kept(tmp_path, monkeypatch):
    original = linear.LinearModel._predict_proba
    monkeypatch.setattr(linear.LinearModel, "_predict_proba", lambda self, x: np.nextafter(original(self, x), 2))
    kept = linear.cache_file(tmp_path / "derived")
    model = load_model(saved(ESTIMATORS["multinomial"](), tmp_path / "model"), "sklearn", derived_dir=kept.parent)
    assert isinstance(model, SklearnModel) and not kept.exists()


def test_an_unreadable_kept_file_is_rebuilt(tmp_path):
    folder = saved(ESTIMATORS["multinomial"](), tmp_path / "model")
    kept = linear.cache_file(tmp_path / "derived")
    kept.parent.mkdir()
    kept.write_bytes(b"PK\x03\x04 torn")
    assert isinstance(load_model(folder, "sklearn", derived_dir=kept.parent), SklearnModel)
    assert isinstance(load_model(folder, "sklearn", derived_dir=kept.parent), linear.LinearModel)


def test_the_same_model_keeps_the_same_bytes(tmp_path):  # so a model image that carries the form is reproducible
    folder = saved(ESTIMATORS["scaled logistic regression"](), tmp_path / "model")
    kept = [linear.cache_file(tmp_path / name) for name in ("one", "two")]
    for file in kept:
        load_model(folder, "sklearn", derived_dir=file.parent)
    assert kept[0].read_bytes() == kept[1].read_bytes()
    with zipfile.ZipFile(kept[0]) as archive:  # no time of writing inside
        assert {entry.date_time for entry in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert linear.keep(str(folder), str(tmp_path / "one")) == f"kept {kept[0].name}"


def test_another_library_version_checks_again(tmp_path, monkeypatch):
    before = linear.cache_file(tmp_path)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "9.9" if name == "scikit-learn" else "1.0")
    assert linear.cache_file(tmp_path) != before
