"""Named columns: matching the ones a caller sends to the ones a model was trained on.

A model knows its feature names from its files (scikit-learn's ``feature_names_in_``, an MLflow
signature), from model.json's ``columns``, or from the header of its baseline CSV. Columns sent
in another order are reordered; unknown, missing or repeated ones are refused by name.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.errors import InvalidInput, ModelLoadError


def reorder(matrix: np.ndarray, columns: list[str], model_columns: list[str] | None) -> np.ndarray:
    """The matrix's columns (named ``columns``) in the model's order; InvalidInput naming what does not match."""
    if model_columns is None:
        raise InvalidInput("this model does not know its feature names, so named columns cannot be matched; "
                           "send the rows in training order without 'columns' (or declare \"columns\" in "
                           "model.json)")
    if columns == model_columns:
        return matrix
    unknown = [c for c in columns if c not in model_columns]
    missing = [c for c in model_columns if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if unknown or missing or repeated:
        problems = [f"{label} {names}" for label, names in
                    (("unknown", unknown), ("missing", missing), ("repeated", repeated)) if names]
        raise InvalidInput(f"columns do not match the model's {model_columns}: {'; '.join(problems)}")
    return matrix[:, [columns.index(name) for name in model_columns]]


def baseline_columns(path: Path) -> list[str]:
    """The header row of a baseline CSV (the columns ``mlops monitor`` compares): the feature names."""
    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle))
    except (OSError, StopIteration, csv.Error, UnicodeDecodeError) as error:
        raise ModelLoadError(f"cannot read the column names of baseline {path}: {error or 'empty file'}") from None
