"""The QuickBooks Online query language subset (api-contracts §1.4).

``SELECT * | COUNT(*) FROM <Entity> [WHERE a op v AND ...] [ORDERBY f [ASC|DESC][, ...]]
[STARTPOSITION n] [MAXRESULTS m]``; operators ``= < > <= >= != IN (...) LIKE '%x%'``; strings in
single quotes with ``\\'`` escaping an apostrophe; nested fields such as ``MetaData.LastUpdatedTime``.
No OR, GROUP BY, JOIN or projections (QBO rejects them, and so do we).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any


class QueryError(Exception):
    """code 4000 = QueryParserError, 4001 = QueryValidationError (QBO's codes)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:\\.|[^'\\])*')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),*])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


@dataclass
class Condition:
    field: str
    op: str  # = != < > <= >= IN LIKE
    value: Any  # str | Decimal | int | bool | list


@dataclass
class Query:
    count: bool
    entity: str
    where: list[Condition] = field(default_factory=list)
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    start_position: int = 1
    max_results: int = 100


def _tokenize(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip().rstrip(";").strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            rest = text[pos:].strip()
            if not rest:
                break
            raise QueryError("4000", f"QueryParserError: Encountered \"{rest[:20]}\" at character {pos + 1}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(text: str, entities: dict[str, set[str]]) -> Query:
    """Parse `text`; `entities` maps each queryable entity name to its filterable fields."""
    toks = _tokenize(text)
    i = 0

    def peek(offset: int = 0) -> tuple[str, str] | None:
        return toks[i + offset] if i + offset < len(toks) else None

    def expect_word(*words: str) -> str:
        nonlocal i
        t = peek()
        if t is None or t[0] != "word" or t[1].upper() not in words:
            got = t[1] if t else "<EOF>"
            raise QueryError("4000", f"QueryParserError: Encountered \"{got}\", was expecting {' or '.join(words)}")
        i += 1
        return t[1].upper()

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        t = peek()
        if t is None or t[0] != kind or (value is not None and t[1] != value):
            got = t[1] if t else "<EOF>"
            raise QueryError("4000", f"QueryParserError: Encountered \"{got}\", was expecting {value or kind}")
        i += 1
        return t[1]

    expect_word("SELECT")
    count = False
    t = peek()
    if t == ("punct", "*"):
        i += 1
    elif t and t[0] == "word" and t[1].upper() == "COUNT":
        i += 1
        expect("punct", "(")
        expect("punct", "*")
        expect("punct", ")")
        count = True
    else:
        raise QueryError("4000", "QueryParserError: only SELECT * or SELECT COUNT(*) is supported (no projections)")
    expect_word("FROM")
    ent_tok = expect("word")
    canon = {e.lower(): e for e in entities}
    entity = canon.get(ent_tok.lower())
    if entity is None:
        raise QueryError("4001", f"QueryValidationError: Entity '{ent_tok}' is not supported or does not exist")
    fields = {f.lower(): f for f in entities[entity]}
    q = Query(count=count, entity=entity)

    def field_name(tok: str) -> str:
        f = fields.get(tok.lower())
        if f is None:
            raise QueryError("4001", f"QueryValidationError: property '{tok}' is not queryable for entity {entity}")
        return f

    def literal() -> Any:
        nonlocal i
        t = peek()
        if t is None:
            raise QueryError("4000", "QueryParserError: Encountered <EOF>, was expecting a value")
        i += 1
        if t[0] == "string":
            return _unquote(t[1])
        if t[0] == "number":
            return Decimal(t[1])
        if t[0] == "word" and t[1].lower() in ("true", "false"):
            return t[1].lower() == "true"
        raise QueryError("4000", f"QueryParserError: Encountered \"{t[1]}\", was expecting a value")

    t = peek()
    if t and t[0] == "word" and t[1].upper() == "WHERE":
        i += 1
        while True:
            fname = field_name(expect("word"))
            t = peek()
            if t is None:
                raise QueryError("4000", "QueryParserError: Encountered <EOF>, was expecting an operator")
            if t[0] == "op":
                i += 1
                op = "!=" if t[1] == "<>" else t[1]
                q.where.append(Condition(fname, op, literal()))
            elif t[0] == "word" and t[1].upper() == "IN":
                i += 1
                expect("punct", "(")
                vals = [literal()]
                while peek() == ("punct", ","):
                    i += 1
                    vals.append(literal())
                expect("punct", ")")
                q.where.append(Condition(fname, "IN", vals))
            elif t[0] == "word" and t[1].upper() == "LIKE":
                i += 1
                v = literal()
                if not isinstance(v, str):
                    raise QueryError("4000", "QueryParserError: LIKE needs a quoted string")
                q.where.append(Condition(fname, "LIKE", v))
            else:
                raise QueryError("4000", f"QueryParserError: Encountered \"{t[1]}\", was expecting an operator")
            t = peek()
            if t and t[0] == "word" and t[1].upper() == "AND":
                i += 1
                continue
            if t and t[0] == "word" and t[1].upper() == "OR":
                raise QueryError("4000", "QueryParserError: Encountered \"OR\": OR is not supported")
            break
    t = peek()
    if t and t[0] == "word" and t[1].upper() in ("ORDERBY", "ORDER"):
        i += 1
        if t[1].upper() == "ORDER":
            expect_word("BY")
        while True:
            fname = field_name(expect("word"))
            desc = False
            t = peek()
            if t and t[0] == "word" and t[1].upper() in ("ASC", "DESC"):
                desc = t[1].upper() == "DESC"
                i += 1
            q.order_by.append((fname, desc))
            if peek() == ("punct", ","):
                i += 1
                continue
            break
    while peek() is not None:
        kw = expect_word("STARTPOSITION", "MAXRESULTS")
        n = expect("number")
        if not re.fullmatch(r"\d+", n):
            raise QueryError("4000", f"QueryParserError: {kw} needs an integer, got {n}")
        if kw == "STARTPOSITION":
            q.start_position = max(1, int(n))
        else:
            m = int(n)
            if m > 1000:
                raise QueryError("4001", f"QueryValidationError: MAXRESULTS {m} exceeds the maximum of 1000")
            q.max_results = m
    return q


def _get(rec: dict, path: str) -> Any:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    if isinstance(cur, dict) and "value" in cur:  # a reference compares by its Id
        cur = cur["value"]
    return cur


def _parse_dt(v: str) -> dt.datetime | None:
    try:
        d = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d


def _coerce(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Make a field value and a literal comparable, or None when they are not."""
    if a is None:
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(b, str):
            b = b.lower() == "true"
        if isinstance(a, str):
            a = a.lower() == "true"
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, (int, Decimal)) and not isinstance(a, bool):
        try:
            return Decimal(a), Decimal(str(b))
        except InvalidOperation:
            return None
    a = str(a)
    b = str(b)
    if "T" in a and len(a) > 10:  # datetimes: compare instants
        da, db = _parse_dt(a), _parse_dt(b if "T" in b else b + "T00:00:00+00:00")
        if da and db:
            return da, db
    if re.fullmatch(r"\d+", a) and re.fullmatch(r"-?\d+", b):  # ids compare numerically
        return int(a), int(b)
    return a.lower(), b.lower()


def _matches(rec: dict, c: Condition) -> bool:
    v = _get(rec, c.field)
    if c.op == "IN":
        return any((p := _coerce(v, x)) is not None and p[0] == p[1] for x in c.value)
    if c.op == "LIKE":
        if v is None:
            return False
        pattern = "^" + ".*".join(re.escape(part) for part in c.value.split("%")) + "$"
        return re.match(pattern, str(v), re.IGNORECASE | re.DOTALL) is not None
    p = _coerce(v, c.value)
    if p is None:
        return c.op == "!=" and v is None
    a, b = p
    try:
        return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[c.op]
    except TypeError:
        return False


def execute(q: Query, records: list[dict], *, name_list: bool) -> list[dict] | int:
    """Filter/sort/page `records` for `q`; a COUNT(*) returns an int."""
    conds = list(q.where)
    if name_list and not any(c.field == "Active" for c in conds):
        conds.append(Condition("Active", "=", True))
    rows = [r for r in records if all(_matches(r, c) for c in conds)]
    if q.count:
        return len(rows)

    def id_key(r: dict) -> int:
        try:
            return int(r.get("Id", 0))
        except ValueError:
            return 0

    rows.sort(key=id_key)
    for fname, desc in reversed(q.order_by):
        def k(r: dict, f: str = fname) -> tuple:
            v = _get(r, f)
            if v is None:
                return (0, "")
            if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
                return (1, Decimal(v))
            if isinstance(v, str) and re.fullmatch(r"\d+", v) and f in ("Id", "CustomerRef"):
                return (1, Decimal(v))
            return (2, str(v).lower())

        rows.sort(key=k, reverse=desc)
    start = q.start_position - 1
    return rows[start : start + q.max_results]
