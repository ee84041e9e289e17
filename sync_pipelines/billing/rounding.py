"""Rounding of hours (DESIGN §5 "Quantities"), vectorised, in integers only.

Hours arrive as centihours (Harvest's 2-dp hours x 100). Time is tracked in minutes, and a
2-dp hour is a rendering of minutes (10 min shows as 0.17 h), so rounding to an increment
works on whole minutes: each entry's hours are taken to the nearest minute
(``(centi*60 + 50) // 100``), the minutes (one entry's for `scope: entry`, a line's sum for
`scope: line`) are rounded to the increment, and the result converted back to centihours,
exactly, since every allowed increment is a multiple of 3 minutes (5 centihours). Hence three
10-minute entries (0.17 h each) bill 0.75 h per entry and 0.5 h per line at 15 min up, and 1.1 h
at 6 min up bills 1.1 h. With `increment_minutes: 0` hours are kept to 2 dp as they are.
"""

from __future__ import annotations

import numpy as np

MODE_CODES = {"up": 0, "nearest": 1, "down": 2}


def increment_centi(minutes: int) -> int:
    """6 min -> 10 centihours; every allowed increment is a whole number of centihours."""
    centi, rem = divmod(int(minutes) * 100, 60)
    if rem:
        raise ValueError(f"increment {minutes} min is not a whole number of hundredths of an hour")
    return centi


def to_minutes(centi: np.ndarray) -> np.ndarray:
    """Centihours to whole minutes, half up (0.17 h -> 10 min, 1.10 h -> 66 min)."""
    return (np.asarray(centi, dtype=np.int64) * 60 + 50) // 100


def round_minutes(minutes: np.ndarray, inc_centi: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """Round whole minutes to per-row increments (given in centihours, > 0); returns centihours.

    `mode` codes: 0 up, 1 nearest (half up), 2 down.
    """
    m = np.asarray(minutes, dtype=np.int64)
    inc = np.asarray(inc_centi, dtype=np.int64) * 60 // 100  # minutes, exact for allowed increments
    safe = np.where(inc > 0, inc, 1)
    up = -((-m) // safe) * safe
    down = (m // safe) * safe
    nearest = ((2 * m + safe) // (2 * safe)) * safe
    mode = np.asarray(mode, dtype=np.int64)
    out = np.where(mode == 0, up, np.where(mode == 1, nearest, down))
    return out * 100 // 60


def round_centi(centi: np.ndarray, inc: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """Round each value (one entry) to its increment (centihours; 0 = unchanged)."""
    centi = np.asarray(centi, dtype=np.int64)
    inc = np.asarray(inc, dtype=np.int64)
    return np.where(inc > 0, round_minutes(to_minutes(centi), inc, mode), centi)


def round_one(centi: int, minutes: int, mode: str) -> int:
    return int(round_centi(np.array([centi]), np.array([increment_centi(minutes)]), np.array([MODE_CODES[mode]]))[0])
