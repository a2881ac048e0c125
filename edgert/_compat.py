"""Small shims for Python 3.10, which lacks :class:`enum.StrEnum`."""

from __future__ import annotations

import sys

__all__ = ["StrEnum"]

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised only on 3.10
    from enum import Enum

    class StrEnum(str, Enum):
        """A string enum whose members compare equal to, and format as, their values."""

        def __str__(self) -> str:
            return str(self.value)
