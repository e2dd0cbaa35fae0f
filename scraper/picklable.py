"""Quicker pickling for the frozen dataclasses that cross to the parse workers and back."""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, TypeVar

T = TypeVar("T")


def pickled_as_arguments(cls: type[T]) -> type[T]:
    """Pickle a frozen dataclass as (class, its fields' values), rebuilt by calling the class.

    A slots dataclass otherwise pickles through dataclasses' own `__getstate__`/`__setstate__`,
    which walk `fields()` in Python for every object: ~4x slower, and a parse job is pickled
    (and its result unpickled) on the event loop once per page. Every field must be a
    positional `__init__` argument, which the decorator checks, and a subclass must add no
    field of its own (it is rebuilt from the fields this class knows)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not all(field.init and not field.kw_only for field in fields):
        raise TypeError(f"{cls.__name__}: every field must be a positional __init__ argument")
    values = operator.attrgetter(*(field.name for field in fields))
    if len(fields) == 1:

        def __reduce__(self: T) -> tuple[type[T], tuple[Any, ...]]:
            return type(self), (values(self),)

    else:

        def __reduce__(self: T) -> tuple[type[T], tuple[Any, ...]]:
            return type(self), values(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls
