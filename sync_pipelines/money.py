"""Exact money: Decimal amounts, ISO 4217 minor units, half-up rounding, float-free JSON.

Nothing here ever touches binary floating point: QuickBooks rejects a line whose Amount is not
Qty x UnitPrice rounded to the currency's minor unit, and a cent lost to a float is exactly the
error our users fear.
"""

from __future__ import annotations

import json
import secrets
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from iso4217 import Currency


class UnknownCurrencyError(ValueError):
    pass


@lru_cache(maxsize=None)
def minor_units(currency: str) -> int:
    """Digits after the decimal point for `currency` (USD 2, JPY 0, BHD 3), per ISO 4217."""
    try:
        exponent = Currency(currency.upper()).exponent
    except (ValueError, KeyError, AttributeError) as exc:
        raise UnknownCurrencyError(f"unknown ISO 4217 currency code {currency!r}") from exc
    # Funds and precious metals have no minor unit in the table; they are never invoice currencies.
    if exponent is None:
        raise UnknownCurrencyError(f"{currency!r} has no minor unit (not a billing currency)")
    return int(exponent)


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round half-up (away from zero on .5) to the currency's minor unit."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def to_decimal(value: Any, *, what: str = "amount") -> Decimal:
    """Parse an API or config value into a Decimal, refusing floats (they are already inexact)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{what}: refusing binary float {value!r}; parse JSON with parse_float=Decimal")
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{what}: {value!r} is not a decimal number") from exc


def loads(data: str | bytes) -> Any:
    """json.loads with every non-integer number as a Decimal."""
    return json.loads(data, parse_float=Decimal)


def _refuse_floats(o: Any) -> None:
    if isinstance(o, float):
        raise TypeError(f"refusing binary float {o!r} in a payload; use Decimal")
    if isinstance(o, dict):
        for v in o.values():
            _refuse_floats(v)
    elif isinstance(o, (list, tuple)):
        for v in o:
            _refuse_floats(v)


def dumps(obj: Any, *, strict: bool = True, **kwargs: Any) -> str:
    """json.dumps writing Decimals as JSON numbers with their exact digits (never via float).

    ``strict`` (the default, for anything sent to an API or stored in the ledger) refuses binary
    floats anywhere in ``obj``; the sandbox, serving large fixtures, passes ``strict=False``.
    """
    if strict:
        _refuse_floats(obj)
    # json cannot emit a number from a non-float object, so each Decimal travels as a string
    # wrapped in a per-call nonce and is unquoted afterwards. The C encoder calls `default` only
    # for Decimals, so nothing else walks the structure in Python.
    token = "@dec" + secrets.token_hex(6) + "@"

    def default(o: Any) -> str:
        if isinstance(o, Decimal):
            if not o.is_finite():
                raise ValueError(f"cannot write {o} as a JSON number")
            return token + format(o, "f") + token
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    text = json.dumps(obj, default=default, **kwargs)
    if token not in text:
        return text
    return text.replace('"' + token, "").replace(token + '"', "")


def hours_from_centi(centi: int) -> Decimal:
    """Centihours (the engine's exact unit for hours) as Decimal hours with 2 dp."""
    return Decimal(int(centi)).scaleb(-2).quantize(Decimal("0.01"))
