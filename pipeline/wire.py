"""The JSON form of the method's records: what travels in Celery messages and JSON columns.

A record is a plain dataclass, and its fields are its JSON: pydantic writes and reads them
from the dataclass (a field is declared once), converts nested records, and fills a missing
key with the field's default (records stored before a field existed still load). Keys come in
field order, tuples are written as lists and read back as tuples, and a record reads back equal
to itself; unknown keys are ignored (a stored decision record holds a ``TurnRoles`` and more).
A field whose wire form is not its type's says so in its annotation (``pipeline.records.History``).
A float field reads an integer as a float (``2`` as ``2.0``).

Building a ``TypeAdapter`` costs milliseconds and using one microseconds, so each class's is
built once, on first use: these run on every task of every turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter

R = TypeVar("R")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:  # two threads may both build it: the same adapter, either is kept
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


def json_of(record: object) -> dict[str, Any]:
    """``record``'s fields by name: JSON's types only (dicts, lists, str, numbers, None), as a
    Celery message or a JSON column gives them back."""
    data: dict[str, Any] = _adapter(type(record)).dump_python(record, mode="json")
    return data


def record_of(cls: type[R], data: Mapping[str, Any]) -> R:
    """A ``cls`` from its JSON (``json_of``'s, or an older record's): raises pydantic's
    ``ValidationError`` naming the field that is missing or of the wrong type."""
    record: R = _adapter(cls).validate_python(data)
    return record
