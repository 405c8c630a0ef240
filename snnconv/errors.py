"""Error classes. Each carries the exit code the CLI returns, so the contract lives in one place."""

from __future__ import annotations

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class SnnconvError(Exception):
    """Base of every error snnconv raises on purpose (anything else is an internal error)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(SnnconvError):
    """Options that contradict each other or are out of range."""


class ModelImportError(SnnconvError):
    """The ONNX file cannot be read, or its graph cannot be imported."""

    def __init__(self, message: str, *, file: str | None = None, node: str | None = None,
                 op: str | None = None, hint: str | None = None):
        where = []
        if file:
            where.append(f"{file}")
        if node is not None or op:
            where.append(f"node '{node}' ({op})")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message, hint)
        self.file, self.node, self.op = file, node, op


class UnsupportedOpError(ModelImportError):
    """An op (or op configuration) that has no exact TTFS mapping."""


class ModelFileError(SnnconvError):
    """A .snn/.snnq file that is corrupt, truncated, of another format or of a newer version."""


class DataError(SnnconvError):
    """A data file of the wrong shape, dtype or content."""


class OutputError(SnnconvError):
    """An output location that cannot be written, or that would overwrite an input."""


class MismatchError(SnnconvError):
    """The SNN does not reproduce the reference (verify)."""

    exit_code = EXIT_MISMATCH


class UnmappedNodeError(ModelImportError):
    """An IR node type the mapper has no lowering for: a bug in snnconv (the importer built a node
    the mapping pass does not know), so it exits as an internal error."""

    exit_code = EXIT_INTERNAL
