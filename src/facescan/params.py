"""Typed parameters: one pydantic base and the value types every section's model is written with.

Each parameter section (``training``, ``evaluation``, ``predict``, ``preprocess``, ``data``...) is a
:class:`Params` subclass. Kedro validates a node's ``params:<section>`` input against the type hint of
the node's argument before any node runs (``kedro.validation``: it calls ``model_validate``), so a
typo or a bad value stops ``kedro run`` at once; code outside Kedro calls :meth:`Params.parse`.

Whatever the path, the error is one sentence per problem naming the key and the value received,
e.g. ``training.lr: expected a finite number > 0, got 0`` or ``training.max_epoch: unknown option;
valid options are [...]`` (pydantic's own messages are rewritten by :func:`describe`).
"""

from __future__ import annotations

import contextlib
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

__all__ = [
    "Amp",
    "AutoOrBool",
    "AutoOrInt",
    "Backend",
    "Choice",
    "Device",
    "Fraction",
    "Integer",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OptionalPath",
    "ParameterError",
    "Params",
    "PositiveFloat",
    "PositiveInt",
    "StrictBool",
    "describe",
]


class ParameterError(ValueError):
    """A parameter section failed validation; the message names every bad key."""


# -- value types ---------------------------------------------------------------------------------
def _integer(minimum: int, *, auto: bool = False, nullable: bool = False) -> Any:
    allowed = (
        f"an integer >= {minimum}"
        + (' or "auto"' if auto else "")
        + (" or null" if nullable else "")
    )

    def check(value: Any) -> Any:
        if value is None and nullable:
            return None
        if auto and value == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected {allowed}")
        return value

    return BeforeValidator(check)


def _number(*, positive: bool) -> Any:
    bound = "> 0" if positive else ">= 0"

    def check(value: Any) -> float:
        # YAML 1.1 reads "2e-4" (no dot) as a string; accept any number written as text.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"expected a finite number {bound}")
        return float(value)

    return BeforeValidator(check)


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError("expected a number in (0, 1)")
    return float(value)


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _auto_or_bool(value: Any) -> bool | str:
    if value != "auto" and not isinstance(value, bool):
        raise ValueError('expected "auto", true or false')
    return value


def _optional_path(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError("expected a path or null")
    return value


def Choice(*choices: str) -> Any:  # noqa: N802 (a type factory, used like a type)
    """A string among ``choices``; YAML's bare ``off`` (read as false) counts as ``"off"``."""

    def check(value: Any) -> str:
        if value is False and "off" in choices:
            value = "off"
        if value not in choices:
            raise ValueError(f"expected one of {list(choices)}")
        return value

    return Annotated[str, BeforeValidator(check)]


def Integer(minimum: int, *, auto: bool = False, nullable: bool = False) -> Any:  # noqa: N802
    """An integer >= ``minimum`` (a bool is not one), optionally ``"auto"`` and/or null."""
    return Annotated[int | str | None, _integer(minimum, auto=auto, nullable=nullable)]


PositiveInt = Annotated[int, _integer(1)]
NonNegativeInt = Annotated[int, _integer(0)]
AutoOrInt = Annotated[int | str, _integer(1, auto=True)]
PositiveFloat = Annotated[float, _number(positive=True)]
NonNegativeFloat = Annotated[float, _number(positive=False)]
Fraction = Annotated[float, BeforeValidator(_fraction)]
StrictBool = Annotated[bool, BeforeValidator(_strict_bool)]
AutoOrBool = Annotated[bool | str, BeforeValidator(_auto_or_bool)]
OptionalPath = Annotated[str | None, BeforeValidator(_optional_path)]


# -- the base ------------------------------------------------------------------------------------
class Params(BaseModel):
    """A parameter section: unknown keys refused, immutable, errors naming ``<section>.<key>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)

    #: The section's name in the parameters (``training``), the prefix of every message.
    section: ClassVar[str] = ""

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """pydantic's ``model_validate``, with one-sentence messages naming the keys.

        Raises:
            ParameterError: (a ``ValueError``) naming ``<section>.<key>`` and the value received.
        """
        if obj is None:
            obj = {}
        if not isinstance(obj, Mapping):
            raise ParameterError(f"{cls.section}: expected a mapping of options, got {obj!r}")
        try:
            return super().model_validate(dict(obj), *args, **kwargs)
        except ValidationError as exc:
            raise ParameterError(describe(exc, cls)) from None

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None, **context: Any) -> Any:
        """Validate a plain dict (or an instance, returned as is); missing keys take defaults."""
        if isinstance(values, cls):
            return values
        return cls.model_validate(values, context=context or None)

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON-able) dict of every option, nested sections as dicts, tuples as lists."""
        return self.model_dump(mode="json")


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The option names of the (nested) model at ``loc``, or None if ``loc`` leaves the models."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _model_in(field.annotation)
        if inner is None:
            return None
        model = inner
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType or origin is Annotated:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """One sentence per error: ``<section>.<key>: <what was expected>, got <value>``."""
    section = getattr(model, "section", "") or model.__name__
    sentences = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        key = ".".join([section, *map(str, loc)])
        kind = err["type"]
        if kind == "extra_forbidden":
            valid = _fields_at(model, loc[:-1])
            sentences.append(f"{key}: unknown option; valid options are {valid}")
            continue
        if kind == "value_error":
            text = str(err["ctx"]["error"])
            if text.startswith(f"{section}.") or text.startswith(f"{section}:"):
                sentences.append(text)  # a check across keys names them itself
                continue
        elif kind == "model_type" or kind == "dict_type":
            text = "expected a mapping"
        else:
            text = err["msg"][:1].lower() + err["msg"][1:]
        sentences.append(f"{key}: {text}, got {err['input']!r}")
    return "; ".join(sentences)


#: The accepted values of the device and precision options (training, evaluation, predict).
Device = Choice("auto", "cpu", "cuda")
Amp = Choice("auto", "bf16", "fp16", "off")
Backend = Choice("auto", "gloo", "nccl")
