"""Probes: they observe the machine and the services it reaches, and turn that into samples.

`REGISTRY` maps each config `kind` to its probe class: every module of this package defines
one kind (its class has `kind`, `Options` and `collect`). Importing this package reads nothing
from the system and opens nothing: probes act only when built and collected, and optional
libraries (a GPU's NVML) are imported only then.
"""

import importlib
import inspect
import pkgutil

_NOT_KINDS = {"base"}


def _discover() -> dict[str, type]:
    registry: dict[str, type] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _NOT_KINDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == module.__name__
                and "kind" in vars(cls)
                and hasattr(cls, "collect")
            ):
                registry[vars(cls)["kind"]] = cls
    return registry


REGISTRY: dict[str, type] = _discover()

__all__ = ["REGISTRY"]
