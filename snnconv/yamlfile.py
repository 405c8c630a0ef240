"""One loader for the YAML files users write (hardware profiles, fine-tuning configs)."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def load_mapping(path, what: str, known: set[str], extra: set[str] = frozenset()) -> dict:
    """The mapping in ``path`` with '-' in keys read as '_'. Every error names the file: missing,
    not YAML, not a mapping, or keys outside ``known | extra`` (listed with the known ones)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: {what} not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(d, dict):
        raise UsageError(f"{p}: a {what} is a mapping of keys to values")
    d = {str(k).replace("-", "_"): v for k, v in d.items()}
    bad = sorted(set(d) - set(known) - set(extra))
    if bad:
        raise UsageError(f"{p}: unknown {what} keys: {', '.join(bad)}",
                         hint="known: " + ", ".join(sorted(known)))
    return d
