"""A count of attribute assignments on the objects of an SNN (the model, its layers, groups
and ops). A compiled simulator compares one integer per call instead of walking every layer for
the identity of its arrays; the walk runs only after some assignment happened (anywhere).
Arrays or lists edited in place are not assignments: ``onnx_backend.forget`` after those.
"""

from __future__ import annotations

_COUNT = [0]


class Tracked:
    """Base of the SNN's dataclasses: every attribute assignment counts as an edit."""

    __slots__ = ()

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        _COUNT[0] += 1


def edits() -> int:
    """How many attribute assignments SNN objects have had in this process."""
    return _COUNT[0]
