"""``advaudit audit``: the configured steps on one model, gates, baseline ratchet, one report.

>>> from advaudit.audit import load_config, run_audit
>>> report = run_audit("model.onnx", load_config("audit.yaml"), "audit-out")  # doctest: +SKIP
>>> report["verdict"]  # doctest: +SKIP
'pass'
"""

from .config import AuditConfig, ConfigError, load_config, starter
from .gates import GateSpec, evaluate_gates, parse_gate
from .run import REPORT_NAME, comparable, run_audit

__all__ = [
    "AuditConfig", "ConfigError", "GateSpec", "REPORT_NAME", "comparable", "evaluate_gates", "load_config",
    "parse_gate", "run_audit", "starter",
]
