"""advaudit: audit trained image classifiers before they ship.

The command line (``advaudit ...``) is a thin layer over this package::

    from advaudit.models import load_model
    from advaudit.data import load_data, prepare

    model = load_model("sample_models/mnist_cnn.onnx")
    data = prepare(load_data("sample_models/data/mnist_test_1k.npz"), model)
    model.predict(data.x).labels
"""

import os as _os

# torch's OpenMP threads busy-wait by default; on a loaded CPU that makes small-op loops (attack
# iterations) 5-20x slower.  Passive waiting costs nothing measurable when the CPU is idle.  Only
# effective when advaudit is imported before torch; an explicit setting is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
