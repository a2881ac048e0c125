"""What ``InferenceSession.warmup`` runs: its arguments checked, and zero-filled requests.

A trial passed one mapping where a list of them belongs (a raw ``AttributeError``), misspelled
an input name (dropped without a word, then reported as a missing input) and gave ``runs=-1``
(accepted, nothing ran): each is refused here before anything runs, saying what to pass.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgert._executable import TensorSpec
from edgert.errors import InputError, InvalidArgumentError
from edgert.session._packed import ml_dtype_of
from edgert.session._setup import initial_signature

__all__ = ["default_shapes", "failure_hint", "shape_sets", "warmup_requests", "warmup_runs"]


def warmup_runs(runs: Any) -> int:
    """``runs`` as an int >= 1.

    Raises:
        InvalidArgumentError: Not an integer, or below 1.
    """
    try:
        count = operator.index(runs)  # numpy integers too
    except TypeError:
        count = 0
    if isinstance(runs, bool) or count < 1:
        raise InvalidArgumentError(f"runs must be an int >= 1, not {runs!r}",
                                   hint="runs per shape set and slot, e.g. "
                                        "session.warmup(runs=2)")
    return count


def default_shapes(specs: tuple[TensorSpec, ...], profile: int) -> dict[str, tuple[int, ...]]:
    """The shapes a warm-up without ``shapes`` runs: the profile's opt (see
    :func:`~edgert.session._setup.initial_signature`); optional inputs left out."""
    return {s.name: shape for s, shape in zip(specs, initial_signature(specs, profile),
                                              strict=True) if shape is not None}


def warmup_requests(shapes: Any, specs: tuple[TensorSpec, ...],
                    profile: int) -> list[dict[str, Any]]:
    """One zero-filled request per shape set (default: the profile's opt shapes).

    Raises:
        InvalidArgumentError: ``shapes`` is not an iterable of mappings.
        InputError: An input name the model does not have, or a shape that is not a sequence
            of non-negative ints.
    """
    by_name = {s.name: s for s in specs}
    sets = [default_shapes(specs, profile)] if shapes is None else \
        shape_sets(shapes, specs, profile)
    return [{name: _zeros(by_name[name], tuple(shape)) for name, shape in one.items()
             if shape is not None} for one in sets]


def shape_sets(shapes: Any, specs: tuple[TensorSpec, ...],
               profile: int) -> list[dict[str, tuple[int, ...] | None]]:
    """``shapes`` (an iterable of ``{input name: shape}``) checked, as a list; a shape of None
    leaves an optional input out.

    Raises:
        InvalidArgumentError: ``shapes`` is not an iterable of mappings.
        InputError: An input name the model does not have, or a shape that is not a sequence
            of non-negative ints.
    """
    example = f"session.warmup([{_text(default_shapes(specs, profile))}])"
    sets = list(shapes) if isinstance(shapes, Iterable) and \
        not isinstance(shapes, (Mapping, str, bytes)) else None
    if sets is None or not all(isinstance(one, Mapping) for one in sets):
        what = "one mapping" if isinstance(shapes, Mapping) else type(shapes).__name__
        raise InvalidArgumentError(
            f"shapes must be a list of {{input name: shape}} mappings, one per set of shapes "
            f"to prepare; got {what}", hint=f"e.g. {example}")
    names = [s.name for s in specs]
    checked = []
    for one in sets:
        unknown = [k for k in one if k not in names]
        if unknown:
            raise InputError(
                f"warm-up shapes name unknown input(s) {', '.join(map(repr, unknown))}; the "
                f"model's inputs are {', '.join(names)}", hint=f"e.g. {example}")
        dims_by_name: dict[str, tuple[int, ...] | None] = {}
        for name, shape in one.items():
            dims = None if shape is None else _dims(shape)
            if dims is None and shape is not None:
                array = isinstance(shape, np.ndarray)
                given = f"a {shape.dtype} array of shape {shape.shape}" if array else \
                    repr(shape)
                raise InputError(f"the warm-up shape of input {name!r} must be a sequence of "
                                 f"non-negative ints, not {given}",
                                 hint=("give shapes, not arrays (x.shape), " if array else
                                       "sizes of every dimension, ") + f"e.g. {example}")
            dims_by_name[name] = dims
        checked.append(dims_by_name)
    return checked


def _dims(shape: Any) -> tuple[int, ...] | None:
    if isinstance(shape, np.ndarray):  # a shape held in an int array; not an array of data
        if shape.ndim != 1 or shape.dtype.kind not in "iu":
            return None
        shape = shape.tolist()
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        return None
    dims = []
    for d in shape:
        if isinstance(d, bool):
            return None
        try:
            dims.append(operator.index(d))
        except TypeError:
            return None
    return tuple(dims) if all(d >= 0 for d in dims) else None


def _text(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return "{" + ", ".join(f"{k!r}: {v}" for k, v in shapes.items()) + "}"


def _zeros(spec: TensorSpec, shape: tuple[int, ...]) -> Any:
    """A zero-filled request input for ``spec`` (empty strings; packed sub-byte types packed)."""
    if spec.dtype.kind == "O":
        return np.full(shape, "", dtype=object)
    if spec.element_bits != 8 * spec.dtype.itemsize:
        dtype = ml_dtype_of(spec)
        return np.zeros(shape, dtype) if dtype is not None else \
            np.zeros(spec.nbytes(shape), np.uint8)
    return np.zeros(shape, dtype=spec.dtype)


def failure_hint(err_hint: str | None, specs: tuple[TensorSpec, ...], profile: int,
                 defaulted_unprofiled: bool) -> str:
    """The hint of a warm-up run that failed: the run's own, then shapes that fit."""
    own = f"{err_hint}; " if err_hint else ""
    example = f"session.warmup([{_text(default_shapes(specs, profile))}])"
    if defaulted_unprofiled:
        return (own + f"pass the shapes the robot will use, e.g. {example} with the real "
                "sizes: without a profile a dynamic dimension gets 1")
    return own + f"warm up shapes the model accepts, e.g. {example}"
