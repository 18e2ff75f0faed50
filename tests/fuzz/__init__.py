"""Property-based and mutation fuzzing of advaudit's loaders and command entry points (issue 18).

* :mod:`.seeds`: the files mutated (a tiny model in every format, data in every format, a calibration,
  an audit configuration and reports; the real sample files in ``sample_models/``);
* :mod:`.mutate`: byte mutation (truncate, bit-flip, splice, duplicate ranges) and tree mutation of
  JSON/YAML documents;
* :mod:`.inputs`: hostile input files per family (ONNX, TorchScript, ``.pt2``, npz, IDX, image folders,
  YAML, calibration and report JSON, spec and labels files), each saying whether it is valid;
* :mod:`.cases`: one case builder per entry point (:data:`~.cases.ENTRY_POINTS`), hostile option values;
* :mod:`.harness`: running a case (in process, as a subprocess, or in a worker process with a time
  limit) and checking the contract (:func:`~.harness.check`).

``tests/test_fuzz.py`` runs a small, fixed-seed sample of this in CI; ``benchmarks/fuzz.py --minutes N``
runs it for as long as asked.
"""

from .cases import ENTRY_POINTS
from .harness import Case, Outcome, Worker, check, describe, run_case
from .seeds import Seeds

__all__ = ["ENTRY_POINTS", "Case", "Outcome", "Seeds", "Worker", "check", "describe", "run_case"]
