"""Which handler imports a node: a table keyed by (domain, op type, since version).

ONNX versions every op separately, and a model declares one opset per domain. An op whose layout
changed (an attribute that became an input, a new default) gets one handler per layout, each
registered with the opset version it is valid from; a node is imported by the handler with the
largest ``since`` that is not newer than the model's opset. So opset differences are separate
small functions instead of branches inside one, and registering the same key twice is a
programming error that fails loudly at import time instead of silently replacing a handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import EXIT_INTERNAL, SnnconvError

#: The default ONNX domain; "ai.onnx" is another spelling of it.
ONNX_DOMAIN = ""

Handler = Callable[..., None]  # (ctx: context.Ctx, node: onnx.NodeProto) -> None


class DuplicateHandlerError(SnnconvError):
    """Two handlers registered for the same (domain, op type, since version): a bug in snnconv."""

    exit_code = EXIT_INTERNAL


def _domain(domain: str) -> str:
    return ONNX_DOMAIN if domain in ("", "ai.onnx") else domain


def _describe(fn: Handler) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class Registry:
    """Handlers by (domain, op type) and then by the opset version they are valid from.

    Iterating a registry yields the op types of the default ONNX domain (what the README lists).
    """

    def __init__(self) -> None:
        self._table: dict[tuple[str, str], dict[int, Handler]] = {}

    def add(self, op_type: str, fn: Handler, *, since: int = 1,
            domain: str = ONNX_DOMAIN) -> None:
        versions = self._table.setdefault((_domain(domain), op_type), {})
        if since in versions:
            raise DuplicateHandlerError(
                f"{op_type} (domain '{_domain(domain)}', since opset {since}) already has a "
                f"handler: {_describe(versions[since])}; {_describe(fn)} would replace it",
                hint="give the new handler another since version, or remove the old one")
        versions[since] = fn

    def register(self, *op_types: str, since: int = 1, domain: str = ONNX_DOMAIN):
        """Decorator: ``@register("Conv")``, ``@register("Pad", since=11)``."""
        def deco(fn: Handler) -> Handler:
            for op in op_types:
                self.add(op, fn, since=since, domain=domain)
            return fn
        return deco

    def lookup(self, op_type: str, opset: int, domain: str = ONNX_DOMAIN) -> Handler | None:
        """The handler for a node of this op type in a model of this opset, or None."""
        versions = self._table.get((_domain(domain), op_type), {})
        usable = [v for v in versions if v <= opset]
        return versions[max(usable)] if usable else None

    def versions(self, op_type: str, domain: str = ONNX_DOMAIN) -> tuple[int, ...]:
        """The since versions registered for an op type, oldest first."""
        return tuple(sorted(self._table.get((_domain(domain), op_type), {})))

    def op_types(self, domain: str = ONNX_DOMAIN) -> list[str]:
        d = _domain(domain)
        return sorted(op for dom, op in self._table if dom == d)

    def __iter__(self) -> Iterator[str]:
        return iter(self.op_types())

    def __contains__(self, op_type: object) -> bool:
        return (ONNX_DOMAIN, op_type) in self._table

    def __len__(self) -> int:
        return len(self.op_types())


#: The importer's handlers (filled by importing ``snnconv.importer.ops``).
HANDLERS = Registry()
register = HANDLERS.register
lookup = HANDLERS.lookup
