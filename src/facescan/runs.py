"""Which variant runs (namespaces) a configuration asks for.

One namespace per variant, or per variant and seed when ``ablation.seeds`` has more than one seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class VariantRun:
    """One trained model of the ablation: a Kedro namespace, its variant key and its seed."""

    namespace: str
    variant: str
    seed: int | None


def expand_runs(ablation: dict[str, Any]) -> list[VariantRun]:
    """Expand ``ablation.variants`` x ``ablation.seeds`` into namespaces.

    Args:
        ablation: the ``ablation`` parameters (``variants``, ``seeds``, ``custom_variants``).

    Returns:
        The runs in the configured order.

    Raises:
        ValueError: naming the parameter when a variant key or seed is not usable.
    """
    variants = ablation.get("variants") or []
    if isinstance(variants, str):
        variants = [variants]
    seeds = ablation.get("seeds") or [None]
    if not isinstance(seeds, list | tuple):
        seeds = [seeds]
    for v in variants:
        if not isinstance(v, str) or not _NAME.match(v):
            raise ValueError(
                f"ablation.variants: {v!r} is not a valid variant key (letters, digits, underscore)"
            )
    if len(set(variants)) != len(variants):
        raise ValueError(f"ablation.variants lists a variant twice: {variants}")
    for s in seeds:
        if s is not None and (isinstance(s, bool) or not isinstance(s, int)):
            raise ValueError(f"ablation.seeds: {s!r} is not an integer")
    if len(seeds) == 1:
        return [VariantRun(v, v, seeds[0]) for v in variants]
    return [VariantRun(f"{v}_seed{s}", v, s) for v in variants for s in seeds]
