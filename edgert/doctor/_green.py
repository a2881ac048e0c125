"""The doctor's SM-partition (green context) lines, part of the GPU section."""

from __future__ import annotations

from edgert.doctor._report import Section, Verdict

__all__ = ["add_green_context_checks"]


def add_green_context_checks(s: Section, device_count: int) -> None:
    """Add, per device, whether SM partitions work, the SM count and the legal sizes.

    Never raises: a device without green contexts gets the reason and what to do.
    """
    from edgert import cuda

    missing = False
    for i in range(device_count):
        support = cuda.green_context_support(i)
        layout = support.layout
        if layout is not None:
            s.add(f"device{i}_sm_partitions", {
                "supported": True, "sm_count": layout.sm_count,
                "min_partition_sms": layout.min_partition_sms,
                "alignment_sms": layout.alignment_sms,
            }, Verdict.OK)
        else:
            missing = True
            s.add(f"device{i}_sm_partitions", {"supported": False}, Verdict.INFO, support.reason)
    if missing:
        s.hints.append("without SM partitions (green contexts: CUDA 12.4+ driver) a control "
                       "model can only be protected by stream priority, which does not help "
                       "behind persistent kernels such as large GEMMs; see docs/multimodel.md")
