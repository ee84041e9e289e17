"""Exact money: Decimal amounts, ISO 4217 minor units, half-up rounding, float-free JSON.

Nothing here ever touches binary floating point: QuickBooks rejects a line whose Amount is not
Qty x UnitPrice rounded to the currency's minor unit, and a cent lost to a float is exactly the
error our users fear.
"""

from __future__ import annotations

import json
import re
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


def _replace_decimals(o: Any, token: str) -> Any:
    if isinstance(o, Decimal):
        if not o.is_finite():
            raise ValueError(f"cannot write {o} as a JSON number")
        return f"{token}{format(o, 'f')}{token}"
    if isinstance(o, dict):
        return {k: _replace_decimals(v, token) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_replace_decimals(v, token) for v in o]
    if isinstance(o, float):
        raise TypeError(f"refusing binary float {o!r} in a payload; use Decimal")
    return o


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps writing Decimals as JSON numbers with their exact digits (never via float)."""
    # json cannot emit a number from a non-float object, so each Decimal travels as a string
    # wrapped in a per-call nonce and is unquoted afterwards.
    token = "@dec" + secrets.token_hex(6) + "@"
    text = json.dumps(_replace_decimals(obj, token), **kwargs)
    return re.sub('"' + re.escape(token) + r'(-?[0-9]+(?:\.[0-9]+)?)' + re.escape(token) + '"', r"\1", text)


def hours_from_centi(centi: int) -> Decimal:
    """Centihours (the engine's exact unit for hours) as Decimal hours with 2 dp."""
    return Decimal(int(centi)).scaleb(-2).quantize(Decimal("0.01"))
