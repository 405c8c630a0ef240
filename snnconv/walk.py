"""The one topological walk: evaluate a graph's items in order and free each value after its last
reader, so peak memory is the widest cut of the graph, not its sum."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def reader_counts(items: Iterable[T], sources: Callable[[T], Sequence[str]]) -> dict[str, int]:
    """How many items read each name (a name read twice by one item counts twice)."""
    n: dict[str, int] = {}
    for it in items:
        for s in sources(it):
            n[s] = n.get(s, 0) + 1
    return n


def walk(items: Sequence[T], step: Callable[[T, dict[str, Any]], Any], *,
         name: Callable[[T], str], sources: Callable[[T], Sequence[str]],
         env: dict[str, Any] | None = None, keep: Iterable[str] = ()) -> dict[str, Any]:
    """Run ``step(item, env)`` for every item in order and store its result under ``name(item)``.
    ``env`` holds the graph inputs; values named in ``keep`` (and the last item's) are never
    freed. Returns the environment that is left."""
    env = {} if env is None else env
    keep = set(keep)
    if items:
        keep.add(name(items[-1]))
    left = reader_counts(items, sources)
    for it in items:
        env[name(it)] = step(it, env)
        for s in sources(it):
            left[s] -= 1
            if left[s] == 0 and s not in keep:
                env.pop(s, None)
    return env
