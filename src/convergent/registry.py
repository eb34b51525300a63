"""One name → entry table, shared by the backbone, task and dataset registries (torch-free):
duplicate names are an error, unknown names a KeyError with the closest spellings."""

import difflib
import importlib
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` ("backbone", "task", "dataset") by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[T]:
        """Every entry, in the order of registration."""
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (see `convergent list {self.kind}s`)")
        return self._entries[name]


def load_target(target: str) -> Any:
    """The object named by ``"package.module:attribute"`` (imported now)."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
