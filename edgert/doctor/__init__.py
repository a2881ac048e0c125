"""``edgert doctor`` as a library: :func:`run_doctor` returns a :class:`DoctorReport`."""

from edgert.doctor._report import Check, DoctorReport, Section, Verdict
from edgert.doctor._sections import run_doctor

__all__ = ["Check", "DoctorReport", "Section", "Verdict", "run_doctor"]
