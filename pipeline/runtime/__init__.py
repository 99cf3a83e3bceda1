"""The model runtime: load a model folder by flavor, predict on batches, describe its tensors.

It knows nothing of HTTP: the scoring service (``pipeline.server``) decodes request bodies into
rows or arrays, and answers the runtime's ``InvalidInput`` with 400 and ``ModelLoadError`` with an
unready service; batch scoring uses the same calls without a server::

    model = load_model(folder, "sklearn", baseline=None)   # ModelLoadError when it cannot
    model.predict_batch([[5.1, 3.5, 1.4, 0.2]])            # InvalidInput when the rows do not fit
    model.describe()                                       # platform, inputs, outputs (OIP metadata)

The trust settings (``model.json``: ``trusted_types``, ``allow_pickle``...) are the flavors'
(``pipeline.runtime.flavors``).
"""

from pipeline.errors import InvalidInput, ModelLoadError
from pipeline.runtime.flavors import FLAVOR_CLASSES, load_model
from pipeline.runtime.model import Model
from pipeline.runtime.tensors import TensorSpec

__all__ = ["FLAVOR_CLASSES", "InvalidInput", "Model", "ModelLoadError", "TensorSpec", "load_model"]
