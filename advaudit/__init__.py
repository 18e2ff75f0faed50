"""advaudit: audit trained image classifiers before they ship.

The command line (``advaudit ...``) is a thin layer over this package::

    from advaudit.models import load_model
    from advaudit.data import load_data, prepare

    model = load_model("sample_models/mnist_cnn.onnx")
    data = prepare(load_data("sample_models/data/mnist_test_1k.npz"), model)
    model.predict(data.x).labels
"""

__version__ = "0.1.0"
