"""``module[:attribute]`` as the command line names code to load."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["load_spec"]


def load_spec(spec: str) -> tuple[ModuleType, Any]:
    """Import ``module`` of ``module[:attribute]`` (the working directory first on the
    path): the module and the attribute (``None`` when the spec names none). A spec that
    does not load is a ``SystemExit`` with one line, not a traceback."""
    module_name, _, attribute = spec.partition(":")
    if sys.path[:1] != ["."]:
        sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
        return module, getattr(module, attribute) if attribute else None
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"cannot load {spec!r}: {type(exc).__name__}: {exc}") from None
