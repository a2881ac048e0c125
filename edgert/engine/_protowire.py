"""Just enough of protobuf's wire format to read an ONNX ModelProto without copying it.

Both the header sniff (:mod:`edgert.engine._source`) and the boundary reader
(:mod:`edgert.engine._onnx_graph`) walk messages field by field over a ``memoryview``: a
length-delimited field is a slice, never a copy, so a 50 MiB model costs no 50 MiB transient.
Wire format: https://protobuf.dev/programming-guides/encoding/.
"""

from __future__ import annotations

__all__ = ["Truncated", "fields"]

#: A field's value: an int (varint, fixed32, fixed64) or the bytes of a length-delimited field.
Value = int | memoryview


class Truncated(ValueError):
    """A varint or field runs past the end of the data."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise Truncated("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def fields(data: bytes | memoryview, max_fields: int | None = None) -> list[
        tuple[int, int, Value]]:
    """The fields of one message as (number, wire type, value), in order.

    Raises:
        Truncated: A field runs past the end.
        ValueError: The bytes are not a protobuf message (field number 0, a group wire type,
            an overlong varint), or there are more than ``max_fields`` fields.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    out: list[tuple[int, int, Value]] = []
    pos = 0
    end = len(view)
    while pos < end:
        if max_fields is not None and len(out) >= max_fields:
            raise ValueError("too many fields")
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(view, pos)
            out.append((number, wire, value))
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise Truncated("truncated fixed-width field")
            out.append((number, wire, int.from_bytes(view[pos:pos + size], "little")))
            pos += size
        elif wire == 2:
            length, pos = _varint(view, pos)
            if pos + length > end:
                raise Truncated("truncated length-delimited field")
            out.append((number, wire, view[pos:pos + length]))
            pos += length
        else:
            raise ValueError(f"wire type {wire}")
    return out
