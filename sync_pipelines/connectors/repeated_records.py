"""Records repeated across cursor pages, told apart without keeping every record in memory.

Cursor pages can overlap when the data shifts during a read, so the same record may arrive twice:
read once if the copies are identical, both quarantined if they differ (neither can be trusted,
and keeping the first would silently drop the other's hours). Deciding that needs every record
seen so far; keeping their text in memory is what made a month of 1,000,000 Harvest entries cost
gigabytes. So only an 8-byte digest per id stays in memory, plus each page's exact record texts
zlib-compressed (about a tenth of their size, one blob per page, no disk I/O), decompressed only
for the rare id that comes with two contents.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
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

    Use as a context manager (or call :meth:`close`) to free the kept texts early.
    """

    def __init__(self, id_field: str = "id") -> None:
        self.id_field = id_field
        # id -> (where its first text is kept << 64) | digest of that text; "where" is
        # (page number << 32) | offset in that page's uncompressed blob
        self._first: dict[Any, int] = {}
        self._conflicting: dict[Any, list[str]] = {}
        self._pages: list[bytes] = []

    def __enter__(self) -> RepeatedRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pages = []

    def fresh(self, raws: Iterable[Any]) -> list[Any]:
        """The records of one page not seen before (a repeat, identical or not, is left out)."""
        out = []
        page_no, kept, offset = len(self._pages), [], 0
        for raw in raws:
            rid = raw.get(self.id_field) if isinstance(raw, dict) else None
            if not isinstance(rid, (int, str)):  # no usable id (missing, or an object): cannot repeat
                out.append(raw)
                continue
            text = _canonical(raw).encode()
            digest = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")
            seen = self._first.get(rid)
            if seen is None:
                self._first[rid] = (((page_no << 32) | offset) << _DIGEST_BITS) | digest
                kept.append(_LEN.pack(len(text)) + text)
                offset += _LEN.size + len(text)
                out.append(raw)
                continue
            if seen & ((1 << _DIGEST_BITS) - 1) == digest and rid not in self._conflicting:
                continue
            versions = self._conflicting.get(rid)
            if versions is None:
                versions = self._conflicting[rid] = [self._read(seen >> _DIGEST_BITS, kept)]
            decoded = text.decode()
            if decoded not in versions:
                versions.append(decoded)
        self._pages.append(zlib.compress(b"".join(kept), 1))
        return out

    def conflicts(self) -> dict[Any, list[str]]:
        """Ids that came with two or more different contents, each with every distinct text."""
        return {rid: texts for rid, texts in self._conflicting.items() if len(texts) > 1}

    def _read(self, where: int, current_page: list[bytes]) -> str:
        page_no, offset = where >> 32, where & 0xFFFFFFFF
        blob = b"".join(current_page) if page_no == len(self._pages) else zlib.decompress(self._pages[page_no])
        (length,) = _LEN.unpack_from(blob, offset)
        return blob[offset + _LEN.size: offset + _LEN.size + length].decode()
