"""One way to pass options: an options object, keyword overrides, or both.

Every edgert entry point that takes options (``InferenceSession``, ``bench.run``,
``Engine.load``, ``BufferPool.for_host``/``for_device``) takes a frozen dataclass of them plus
keyword overrides of its fields, and resolves the two here, after cuda.core's
``check_or_create_options``
(https://github.com/NVIDIA/cuda-python/blob/main/cuda_core/cuda/core/experimental/_utils/cuda_utils.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from edgert.errors import InvalidArgumentError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["check_or_create_options"]

_O = TypeVar("_O", bound="DataclassInstance")


def check_or_create_options(cls: type[_O], options: _O | None, overrides: Mapping[str, Any],
                            *, what: str) -> _O:
    """One frozen ``cls`` from ``options`` (or the defaults) with ``overrides`` applied.

    Args:
        cls: A frozen dataclass; its ``__post_init__`` validates and normalizes the values.
        options: An instance of ``cls``, or None for its defaults.
        overrides: Field values that win over ``options``'.
        what: What takes the options, for the error messages (``"InferenceSession"``).

    Returns:
        ``options`` itself when there are no overrides, else a new validated instance.

    Raises:
        InvalidArgumentError: ``options`` is not a ``cls``, an override names no field of
            ``cls`` (the valid names are listed), or a value is refused by ``cls``.
    """
    if options is not None and not isinstance(options, cls):
        raise InvalidArgumentError(
            f"{what} options must be a {cls.__name__} or None, not {type(options).__name__}",
            hint=f"pass {cls.__name__}(...) or the fields as keyword arguments")
    if overrides:
        names = _field_names(cls)
        unknown = sorted(k for k in overrides if k not in names)
        if unknown:
            raise InvalidArgumentError(
                f"{what} got unknown option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; valid options: {', '.join(sorted(names))}",
                hint=f"see {cls.__name__} for what each option does")
        if options is None:
            _check_required(cls, overrides, what)
            return cls(**overrides)
        return dataclasses.replace(options, **overrides)
    if options is None:
        _check_required(cls, overrides, what)
        return cls()
    return options


def _field_names(cls: type[DataclassInstance]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init)


def _check_required(cls: type[DataclassInstance], given: Mapping[str, Any], what: str) -> None:
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.init and f.name not in given and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise InvalidArgumentError(
            f"{what} needs {', '.join(missing)} (no default)",
            hint=f"pass {cls.__name__}({missing[0]}=...) or {missing[0]}=... as a keyword")
