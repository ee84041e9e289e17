"""Records repeated across cursor pages, told apart without keeping every record in memory.

Cursor pages can overlap when the data shifts during a read, so the same record may arrive twice:
read once if the copies are identical, both quarantined if they differ (neither can be trusted,
and keeping the first would silently drop the other's hours). Deciding that needs every record
seen so far; keeping their text in memory is what made a month of 1,000,000 Harvest entries cost
gigabytes. So only an 8-byte digest per id stays in memory, and each record's exact text goes to
an anonymous temporary file, read back only for the rare id that comes with two contents.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from collections.abc import Iterable
from typing import Any

from sync_pipelines import money

from .http import canonical_json

_LEN = struct.Struct("<I")
_DIGEST_BITS = 64


def _canonical(raw: Any) -> str:
    """``canonical_json(raw)``, the text a quarantined record is kept as, without its walk looking
    for binary floats (half the cost of a page): records parsed with ``money.loads`` hold none,
    except NaN/Infinity constants, which show in the text and take the exact slow path."""
    try:
        text = money.dumps(raw, strict=False, sort_keys=True)
    except Exception:  # noqa: BLE001 - whatever canonical_json does with it
        return canonical_json(raw)
    if "NaN" in text or "Infinity" in text:
        return canonical_json(raw)
    return text


class RepeatedRecords:
    """Feed each page's raw records through :meth:`fresh`; ask :meth:`conflicts` at the end.

    Use as a context manager (or call :meth:`close`): the spill file is deleted on close.
    """

    def __init__(self, id_field: str = "id") -> None:
        self.id_field = id_field
        # id -> (offset of its first text in the spill file << 64) | digest of that text
        self._first: dict[Any, int] = {}
        self._conflicting: dict[Any, list[str]] = {}
        self._spill = tempfile.TemporaryFile(prefix="sync_pipelines_pages_")
        self._offset = 0

    def __enter__(self) -> RepeatedRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._spill.close()

    def fresh(self, raws: Iterable[Any]) -> list[Any]:
        """The records of one page not seen before (a repeat, identical or not, is left out)."""
        out = []
        for raw in raws:
            rid = raw.get(self.id_field) if isinstance(raw, dict) else None
            if not isinstance(rid, (int, str)):  # no usable id (missing, or an object): cannot repeat
                out.append(raw)
                continue
            text = _canonical(raw).encode()
            digest = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
            seen = self._first.get(rid)
            if seen is None:
                self._first[rid] = (self._offset << _DIGEST_BITS) | digest
                self._spill.write(_LEN.pack(len(text)) + text)
                self._offset += _LEN.size + len(text)
                out.append(raw)
                continue
            if seen & ((1 << _DIGEST_BITS) - 1) == digest and rid not in self._conflicting:
                continue
            versions = self._conflicting.get(rid)
            if versions is None:
                versions = self._conflicting[rid] = [self._read(seen >> _DIGEST_BITS)]
            decoded = text.decode()
            if decoded not in versions:
                versions.append(decoded)
        return out

    def conflicts(self) -> dict[Any, list[str]]:
        """Ids that came with two or more different contents, each with every distinct text."""
        return {rid: texts for rid, texts in self._conflicting.items() if len(texts) > 1}

    def _read(self, offset: int) -> str:
        self._spill.flush()
        self._spill.seek(offset)
        (length,) = _LEN.unpack(self._spill.read(_LEN.size))
        text = self._spill.read(length).decode()
        self._spill.seek(0, 2)
        return text
