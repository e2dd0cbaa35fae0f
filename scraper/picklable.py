"""Quicker pickling for the frozen dataclasses that cross to the parse workers and back."""

from __future__ import annotations

import dataclasses
import operator
import pickle
from collections.abc import Callable
from typing import Any, SupportsIndex, TypeVar, cast

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


def out_of_band(*names: str) -> Callable[[type[T]], type[T]]:
    """At pickle protocol 5, pickle these `bytes` fields of a `pickled_as_arguments` class as
    `pickle.PickleBuffer`s: a pickler given a `buffer_callback` (the parse workers' pool) then
    leaves them out of the pickle and passes them on its own way (shared memory), instead of
    copying 1.5 MB into the pickle and then into a pipe. Any other pickler, or protocol, stores
    them in the pickle as bytes, as before."""

    def decorate(cls: type[T]) -> type[T]:
        # What pickled_as_arguments gave the class: (the class, its fields' values).
        reduce = cast(Callable[[T], tuple[type[T], tuple[Any, ...]]], cls.__reduce__)
        fields = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
        positions = [fields.index(name) for name in names]

        def __reduce_ex__(self: T, protocol: SupportsIndex) -> tuple[Any, ...]:
            constructor, args = reduce(self)
            if int(protocol) < 5:
                return constructor, args
            values = list(args)
            for position in positions:
                values[position] = pickle.PickleBuffer(values[position])
            return constructor, tuple(values)

        cls.__reduce_ex__ = __reduce_ex__  # type: ignore[assignment,method-assign]
        return cls

    return decorate
