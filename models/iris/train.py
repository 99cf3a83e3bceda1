"""Train the example iris classifier and save it with skops (loadable without unpickling code).

Run from the repository root: python models/iris/train.py
Writes models/iris/model.skops and models/iris/baseline.csv (the training inputs, the reference
that drift is measured against).
"""

from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    features, species = load_iris(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features, species, test_size=0.3, random_state=0, stratify=species)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=0))
    model.fit(train_x, train_y)
    print(f"test accuracy: {model.score(test_x, test_y):.3f}")
    sio.dump(model, HERE / "model.skops")
    np.savetxt(HERE / "baseline.csv", train_x, delimiter=",", header=",".join(COLUMNS),
               comments="", fmt="%.1f")


if __name__ == "__main__":
    main()
