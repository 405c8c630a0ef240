"""snnconv: exact conversion of ReLU networks (ONNX) to time-to-first-spike spiking networks.

``snnconv.convert`` and ``snnconv.load`` are imported on first use, so ``snnconv --version`` and
shell completion do not pay for importing torch. Simulators: ``snn.simulate(x)`` (closed form),
``snnconv.snn.event.simulate_events``; verification: ``snnconv.verify.verify``.
"""

__version__ = "0.1.0"

_LAZY = {"convert": ("conversion", "convert"), "load": ("modelfile", "load")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'snnconv' has no attribute {name!r}")


__all__ = ["__version__", "convert", "load"]
