"""Node functions with some arguments fixed when the pipeline is built (a run's namespace, a split)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


def bind(func: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """``func`` with ``args``/``kwargs`` fixed, as a plain function Kedro reads like ``func``.

    It keeps ``func``'s module, docs and type hints (Kedro validates ``params:`` inputs against
    them, which it cannot do through a ``functools.partial``; kedro-viz shows the code), and has the
    signature of what is left to pass, and, as a partial, the fixed ``args`` and ``keywords``.
    ``name`` renames it (Kedro's default node name).
    """
    bound = functools.partial(func, *args, **kwargs)

    @functools.wraps(func)
    def node_func(*a: Any, **kw: Any) -> Any:
        return bound(*a, **kw)

    node_func.__signature__ = inspect.signature(bound)  # type: ignore[attr-defined]
    node_func.args, node_func.keywords = bound.args, bound.keywords  # type: ignore[attr-defined]
    if name is not None:
        node_func.__name__ = node_func.__qualname__ = name
    return node_func
