"""Lazy package attributes (PEP 562): a package names what it exports and where, and each name's module is
imported on first use. `import distilkit.quantization` then costs only what quantization needs, not the Trainer,
datasets or the Hub client that other parts of distilkit import."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """`__getattr__` and `__dir__` for `package`, whose attribute `name` lives in submodule `exports[name]`."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(importlib.import_module(package), name, value)  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__
