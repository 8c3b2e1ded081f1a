"""Fidelity: the simulator measured against the real kernel (``validate``) and the cost
model fitted to this machine (``calibrate``).  Heavy imports stay inside the modules."""

from .suites import Case, suite
from .validate import Validation, summary, validate, write_outputs

__all__ = ["Case", "Validation", "suite", "summary", "validate", "write_outputs"]
