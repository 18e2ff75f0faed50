"""Reports: one JSON schema (``advaudit.report/1``) for every command, gates, and renderers."""

from .gates import Gate, evaluate_gates, parse_gate
from .writer import SCHEMA, base_report, model_section, write_atomic, write_json

__all__ = ["Gate", "SCHEMA", "base_report", "evaluate_gates", "model_section", "parse_gate", "write_atomic",
           "write_json"]
