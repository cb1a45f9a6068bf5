"""Shared pieces of the settings dataclasses (PromptConfig, AdaptConfig, MetaConfig): one error format that
names the field, the value and what is allowed, and one strict ``from_dict``."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, NoReturn, TypeVar

T = TypeVar("T")


def invalid(config: str, field_name: str, value: Any, allowed: str) -> NoReturn:
    """Raise the standard error: ``AdaptConfig.lr=-1 is not allowed; use a positive learning rate``."""
    raise ValueError(f"{config}.{field_name}={value!r} is not allowed; {allowed}")


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` from a dict (e.g. a checkpoint card), refusing unknown keys by name."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__} got unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
    return cls(**data)
