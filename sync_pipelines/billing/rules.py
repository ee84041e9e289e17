"""The billing rules file (DESIGN §5): pydantic models, loading and whole-file validation.

An invalid file is rejected whole, with every problem listed by path
(``clients.acme.rates[2].from: invalid date 'x'``). Amounts are Decimals parsed from the YAML
source text, never floats.
"""

from __future__ import annotations

import hashlib
import re
import string
import threading
from collections import OrderedDict
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from sync_pipelines import money
from sync_pipelines.billing.guards import over_qbo_limit, qbo_limit_message
from sync_pipelines.billing.yaml_decimal import load_yaml

CLIENT_KEY_RE = re.compile(r"^[a-z0-9_-]+$")
INCREMENTS = (0, 3, 6, 12, 15, 30, 60)
RATE_MAX_DECIMALS = 4  # rates are held as int64 fixed point with 4 decimals inside the engine
MEMO_FIELDS = ("po_number", "client_key", "customer", "period", "period_start", "period_end")


class RulesError(ValueError):
    """The rules file is invalid; `problems` lists every problem, each prefixed by its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid billing rules:\n" + "\n".join(f"  {p}" for p in self.problems))


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(f"refusing binary float {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _currency_code(v: str) -> str:
    """An ISO 4217 code we know the minor unit of, upper-cased (else the validation error)."""
    try:
        money.minor_units(v)
    except money.UnknownCurrencyError:
        raise ValueError(f"unknown currency {v!r}") from None
    return v.upper()


def _within_qbo(value: Decimal) -> Decimal:
    # QuickBooks holds at most 10 digits before the decimal point ("max 15 digits in 10.5
    # format"): a rate, fee, cap or minimum beyond that cannot be invoiced (and is a typo).
    if over_qbo_limit(value):
        raise ValueError(qbo_limit_message(value))
    return value


Amount = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, allow_inf_nan=False), AfterValidator(_within_qbo)]
Percent = Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, le=100, allow_inf_nan=False)]
Hours = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, allow_inf_nan=False)]
IdOrName = Annotated[int | str, BeforeValidator(_no_float)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Rounding(_Model):
    increment_minutes: Literal[0, 3, 6, 12, 15, 30, 60] | None = None
    mode: Literal["up", "nearest", "down"] | None = None
    scope: Literal["entry", "line"] | None = None

    @property
    def increment_centi(self) -> int:
        """The increment in hundredths of an hour (6 min = 10); 0 = no rounding."""
        return (self.increment_minutes or 0) * 100 // 60

    def describe(self) -> str:
        if not self.increment_minutes:
            return "no rounding (hours to 2 dp)"
        return f"{self.increment_minutes} min {self.mode} per {self.scope}"


class RateRow(_Model):
    rate: Amount
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None
    task: IdOrName | None = None
    person: IdOrName | None = None
    project: IdOrName | None = None

    @property
    def score(self) -> int:
        return 4 * (self.project is not None) + 2 * (self.person is not None) + 1 * (self.task is not None)

    @field_validator("rate")
    @classmethod
    def _rate_decimals(cls, v: Decimal) -> Decimal:
        if -v.as_tuple().exponent > RATE_MAX_DECIMALS:  # type: ignore[operator]
            raise ValueError(f"rate {v} has more than {RATE_MAX_DECIMALS} decimal places")
        return v


class Discount(_Model):
    percent: Percent | None = None
    amount: Amount | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "Discount":
        if (self.percent is None) == (self.amount is None):
            raise ValueError("set exactly one of 'percent' or 'amount'")
        return self


class Cap(_Model):
    amount: Amount
    period: Literal["month", "lifetime"]


class Retainer(_Model):
    fee: Amount
    included_hours: Hours
    overage_rate: Amount | None = None
    rollover: bool = False

    @field_validator("included_hours")
    @classmethod
    def _hours_2dp(cls, v: Decimal) -> Decimal:
        if v != v.quantize(Decimal("0.01")):
            raise ValueError(f"included_hours {v} has more than 2 decimal places")
        return v

    @field_validator("overage_rate")
    @classmethod
    def _rate_decimals(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and -v.as_tuple().exponent > RATE_MAX_DECIMALS:  # type: ignore[operator]
            raise ValueError(f"rate {v} has more than {RATE_MAX_DECIMALS} decimal places")
        return v

    @property
    def included_centi(self) -> int:
        return int(self.included_hours * 100)


class TotalJumpGuard(_Model):
    """Hold an invoice whose total exceeds `factor` x the client's largest posted invoice, once the
    client has at least `min_history` posted invoices (docs/rules.md "Guards")."""

    enabled: bool = True
    factor: Annotated[Decimal, BeforeValidator(_no_float), Field(gt=1, allow_inf_nan=False)] = Decimal(10)
    min_history: int = Field(default=3, ge=1)


class Guards(_Model):
    total_jump: TotalJumpGuard | None = None


class InvoiceSettings(_Model):
    group_by: Literal["client", "project", "po"] | None = None
    line_detail: Literal["summary", "project", "task", "person", "task_person", "entry"] | None = None
    terms: str | None = None
    memo: str | None = None


class QboSettings(_Model):
    item: str | None = None
    items_by_task: dict[str, str] | None = None
    class_: str | None = Field(default=None, alias="class")
    terms: str | None = None
    # Fitting the QuickBooks company (DESIGN §5 "The QuickBooks company is read"): US companies
    # mark each line TAX/NON by `taxable`; every other country names a TaxCode per line.
    taxable: bool | None = None
    tax_code: str | None = Field(default=None, min_length=1)
    tax_codes_by_item: dict[str, Annotated[str, Field(min_length=1)]] | None = None
    # The item that carries the discount as a negative line when the company has discounts off.
    discount_item: str | None = Field(default=None, min_length=1)


class ClientRules(_Model):
    harvest_client_id: int
    qbo_customer: str = Field(min_length=1)
    hubspot_company_id: Annotated[str | None, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)] = None
    currency: str | None = None
    billing_type: Literal["time_and_materials", "retainer"] = "time_and_materials"
    rates: list[RateRow] = Field(default_factory=list)
    rounding: Rounding | None = None
    discount: Discount | None = None
    minimum: Amount | None = None
    cap: Cap | None = None
    retainer: Retainer | None = None
    invoice: InvoiceSettings | None = None
    qbo: QboSettings | None = None
    # The key of the QuickBooks company (top-level `companies:`) this client is billed from;
    # None: the only company (or, without `companies:`, the one of QBO_REALM_ID).
    company: str | None = Field(default=None, min_length=1)
    guards: Guards | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return None if v is None else _currency_code(v)


class FirmTax(_Model):
    """How a non-US QuickBooks company applies tax to our line amounts (Invoice.GlobalTaxCalculation)."""

    calculation: Literal["TaxExcluded", "TaxInclusive", "NotApplicable"] = "TaxExcluded"


#: A QuickBooks realm id (company id) is a decimal number (Intuit: "realmId", e.g. 9130350604308576).
REALM_ID_RE = re.compile(r"^[0-9]{1,32}$")


class CompanyRules(_Model):
    """One QuickBooks company (legal entity) the firm bills from (DESIGN §5 "Many QuickBooks companies")."""

    # YAML reads an unquoted realm id as an integer: take it as its digits (never a float)
    realm_id: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)]
    home_currency: str | None = None  # None: firm.home_currency

    @field_validator("realm_id")
    @classmethod
    def _realm(cls, v: str) -> str:
        if not REALM_ID_RE.match(v):
            raise ValueError(f"bad realm id {v!r}: a QuickBooks realm id is the company's number (digits only)")
        return v

    @field_validator("home_currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return None if v is None else _currency_code(v)


class Firm(_Model):
    timezone: str = "UTC"
    home_currency: str = "USD"
    tax: FirmTax = FirmTax()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("home_currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return _currency_code(v)


class HubSpotSettings(_Model):
    """Firm-level HubSpot settings (DESIGN §5 "Deals"): deals with line items reaching
    `ready_for_billing_stage` (a `dealstage` internal id) are invoiced from their line items."""

    ready_for_billing_stage: str = Field(min_length=1)

    @field_validator("ready_for_billing_stage", mode="before")
    @classmethod
    def _stage_text(cls, v: Any) -> Any:
        # stage ids of custom pipelines are numeric: accept a YAML integer, never a float or bool
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v


class Defaults(_Model):
    rounding: Rounding = Rounding()
    invoice: InvoiceSettings = InvoiceSettings()
    qbo: QboSettings = QboSettings()
    guards: Guards = Guards()


_BUILTIN_ROUNDING = Rounding(increment_minutes=0, mode="up", scope="entry")
_BUILTIN_INVOICE = InvoiceSettings(group_by="client", line_detail="task")


def _merge(*layers: BaseModel | None) -> dict[str, Any]:
    """Key-by-key merge: later layers override earlier ones only for the keys they set."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for name in type(layer).model_fields:
            value = getattr(layer, name)
            if value is not None:
                out[name] = value
    return out


class RulesFile(_Model):
    version: Literal[1]
    firm: Firm = Firm()
    defaults: Defaults = Defaults()
    hubspot: HubSpotSettings | None = None  # None: no invoices from deal line items
    # QuickBooks companies by key; None: one company, the realm of QBO_REALM_ID
    companies: dict[str, CompanyRules] | None = None
    clients: dict[str, ClientRules] = Field(default_factory=dict)
    source: str = Field(default="<rules>", exclude=True)

    def effective(self, client_key: str) -> ClientRules:
        # memoised: a copy of this model (model_copy) may share the dict, so each entry remembers
        # the exact objects it was computed from and is recomputed when any differs
        cache = self.__dict__.setdefault("_effective_cache", {})
        basis = (self.clients[client_key], self.defaults, self.firm)
        hit = cache.get(client_key)
        if hit is None or any(a is not b for a, b in zip(hit[0], basis)):
            hit = (basis, self._effective(client_key))
            cache[client_key] = hit
        return hit[1]

    def _effective(self, client_key: str) -> ClientRules:
        """The client's rules with `defaults` merged in key by key and every section resolved.

        `rounding`, `invoice` and `qbo` are complete; `qbo.terms` is the resolved term (the
        client's `qbo.terms`, else its `invoice.terms`, else the defaults' in the same order);
        `currency` defaults to the firm's home currency.
        """
        c = self.clients[client_key]
        d = self.defaults
        rounding = Rounding(**_merge(_BUILTIN_ROUNDING, d.rounding, c.rounding))
        invoice = InvoiceSettings(**_merge(_BUILTIN_INVOICE, d.invoice, c.invoice))
        qbo = _merge(d.qbo, c.qbo)
        terms = None
        for candidate in (c.qbo.terms if c.qbo else None, c.invoice.terms if c.invoice else None, d.qbo.terms, d.invoice.terms):
            if candidate is not None:
                terms = candidate
                break
        qbo["terms"] = terms
        qbo.setdefault("items_by_task", {})
        qbo.setdefault("tax_codes_by_item", {})
        if "class_" in qbo:
            qbo["class"] = qbo.pop("class_")
        return c.model_copy(
            update={
                "rounding": rounding,
                "invoice": invoice,
                "qbo": QboSettings(**qbo),
                "currency": c.currency or self.company_home_currency(client_key),
                # the client's guard replaces the defaults' whole (its keys belong together)
                "guards": Guards(total_jump=(c.guards.total_jump if c.guards and c.guards.total_jump else None)
                                 or d.guards.total_jump or TotalJumpGuard()),
            }
        )

    # -- QuickBooks companies (DESIGN §5 "Many QuickBooks companies")
    def company_key(self, client_key: str) -> str | None:
        """The key of the company `client_key` is billed from; None without `companies:` (the
        company of QBO_REALM_ID). A valid file resolves every client (see `_company_problems`)."""
        if not self.companies:
            return None
        named = self.clients[client_key].company
        if named is not None:
            return named
        return next(iter(self.companies)) if len(self.companies) == 1 else None

    def company_realm(self, company_key: str | None, default_realm: str) -> str:
        """The realm id of a company key (`default_realm`, i.e. QBO_REALM_ID, for None)."""
        if company_key is None or not self.companies:
            return default_realm
        return self.companies[company_key].realm_id

    def company_home_currency(self, client_key: str) -> str:
        key = self.company_key(client_key)
        if key is not None and self.companies and self.companies[key].home_currency:
            return self.companies[key].home_currency  # type: ignore[return-value]
        return self.firm.home_currency

    def company_realms(self, default_realm: str) -> dict[str | None, str]:
        """Every company the file bills from: {company key: realm id} ({None: default_realm}
        without `companies:`)."""
        if not self.companies:
            return {None: default_realm}
        return {k: c.realm_id for k, c in self.companies.items()}

    def clients_by_company(self, client_keys: list[str] | None = None) -> dict[str | None, list[str]]:
        """Client keys grouped by company key, in the order of `companies:` (sorted within)."""
        keys = sorted(self.clients) if client_keys is None else sorted(set(client_keys))
        out: dict[str | None, list[str]] = {k: [] for k in (self.companies or {None: None})}
        for ck in keys:
            out.setdefault(self.company_key(ck), []).append(ck)
        return out

    def client_for_harvest_client(self, harvest_client_id: int) -> str | None:
        """The rules client key mapped to a Harvest client id, or None."""
        for key, c in self.clients.items():
            if c.harvest_client_id == int(harvest_client_id):
                return key
        return None

    def harvest_client_map(self) -> dict[int, str]:
        return {c.harvest_client_id: key for key, c in self.clients.items()}


# --------------------------------------------------------------------------------------------
# validation


def _path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<file>"


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    value = err.get("input")
    if kind.startswith("date") or kind.startswith("datetime"):
        return f"invalid date {value!r}" if not isinstance(value, date) else f"invalid date {value.isoformat()!r}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("decimal_parsing", "decimal_type"):
        return f"invalid number {value!r}"
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind in ("literal_error", "int_parsing", "int_type", "string_type", "bool_parsing", "bool_type",
                "greater_than", "greater_than_equal", "less_than_equal", "dict_type", "list_type",
                "model_type", "int_from_float", "string_too_short"):
        return f"{msg} (got {value!r})"
    return msg


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic names union members in the location (e.g. ``int`` / ``str``): drop them
        loc = tuple(p for p in loc if not (isinstance(p, str) and p in ("int", "str", "decimal", "function-before[_no_float(), int]", "function-before[_no_float(), str]")))
        out.append(f"{_path(loc, prefix)}: {_message(err)}")
    # a union failing on both members reports twice: keep one
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _check_amount_digits(value: Decimal | None, currency: str, path: str, problems: list[str]) -> None:
    if value is None:
        return
    digits = money.minor_units(currency)
    if value != value.quantize(Decimal(1).scaleb(-digits)):
        problems.append(f"{path}: {value} has more decimal places than {currency} allows ({digits})")


def _rows_could_tie(a: RateRow, b: RateRow) -> bool:
    if a.score != b.score or a.from_ != b.from_:
        return False
    for dim in ("project", "person", "task"):
        va, vb = getattr(a, dim), getattr(b, dim)
        if va is None:
            continue
        # same kind (both ids or both names) and different: no entry can match both rows
        if type(va) is type(vb) and va != vb:
            return False
    return True


def _memo_fields(template: str) -> list[str]:
    fields = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            fields.append(name)
    return fields


def _semantic_problems(rules: RulesFile, key: str, harvest_ids: dict[int, str]) -> list[str]:
    problems: list[str] = []
    p = f"clients.{key}"
    c = rules.clients[key]
    eff = rules.effective(key)
    currency = eff.currency or rules.firm.home_currency
    if c.harvest_client_id in harvest_ids:
        problems.append(f"{p}.harvest_client_id: {c.harvest_client_id} is already mapped by clients.{harvest_ids[c.harvest_client_id]}")
    else:
        harvest_ids[c.harvest_client_id] = key
    for i, row in enumerate(c.rates):
        if row.from_ is not None and row.to is not None and row.from_ > row.to:
            problems.append(f"{p}.rates[{i}].from: {row.from_.isoformat()} is after to {row.to.isoformat()}")
        for j in range(i):
            if _rows_could_tie(c.rates[j], row):
                problems.append(
                    f"{p}.rates[{i}]: could tie with rates[{j}] (same filters, score {row.score} and 'from'); "
                    "set different filters or dates"
                )
    _check_amount_digits(c.minimum, currency, f"{p}.minimum", problems)
    if c.discount is not None:
        _check_amount_digits(c.discount.amount, currency, f"{p}.discount.amount", problems)
    if c.cap is not None:
        _check_amount_digits(c.cap.amount, currency, f"{p}.cap.amount", problems)
    if c.retainer is not None:
        _check_amount_digits(c.retainer.fee, currency, f"{p}.retainer.fee", problems)
    if c.billing_type == "retainer" and c.retainer is None:
        problems.append(f"{p}.retainer: required when billing_type is retainer")
    if c.billing_type != "retainer" and c.retainer is not None:
        problems.append(f"{p}.retainer: only allowed with billing_type: retainer")
    if c.billing_type == "retainer" and eff.invoice.group_by != "client":  # type: ignore[union-attr]
        problems.append(f"{p}.invoice.group_by: a retainer client is invoiced once a month (group_by must be client)")
    if not eff.qbo.item:  # type: ignore[union-attr]
        problems.append(f"{p}.qbo.item: no QuickBooks item (set defaults.qbo.item or clients.{key}.qbo.item)")
    memo = eff.invoice.memo  # type: ignore[union-attr]
    if memo is not None:
        try:
            unknown = [f for f in _memo_fields(memo) if f not in MEMO_FIELDS]
        except ValueError as exc:
            problems.append(f"{p}.invoice.memo: invalid template ({exc})")
        else:
            for f in unknown:
                problems.append(f"{p}.invoice.memo: unknown field {{{f}}} (known: {', '.join(MEMO_FIELDS)})")
    return problems


def _company_problems(rules: RulesFile, head_ok: bool, raw_clients: dict[Any, Any]) -> list[str]:
    """Every client resolves to exactly one company, and each company is a distinct realm: a
    client billed from the wrong company would put its invoice in the wrong legal entity. A
    client that failed validation is checked from the raw file, so it is told everything at once."""
    problems: list[str] = []
    companies = rules.companies or {}
    realms: dict[str, str] = {}
    for key, comp in companies.items():
        if not CLIENT_KEY_RE.match(key):
            problems.append(f"companies.{key}: company key must match [a-z0-9_-]+")
        if comp.realm_id in realms:
            problems.append(f"companies.{key}.realm_id: duplicate realm_id {comp.realm_id} (also companies."
                            f"{realms[comp.realm_id]}): one QuickBooks company per key")
        else:
            realms[comp.realm_id] = key
    if not head_ok and not companies:
        return problems  # the `companies:` section itself is invalid (already reported)
    named = {ck: c.company for ck, c in rules.clients.items()}
    for ck, raw in raw_clients.items():
        if str(ck) not in named and isinstance(raw, dict) and isinstance(raw.get("company"), (str, type(None))):
            named[str(ck)] = raw.get("company")
    for ck, company in named.items():
        p = f"clients.{ck}.company"
        if company is not None and not companies:
            problems.append(f"{p}: names company {company!r} but the file has no companies: section "
                            "(add companies: {<key>: {realm_id: ...}})")
        elif company is not None and company not in companies:
            problems.append(f"{p}: unknown company {company!r} (known: {', '.join(companies)})")
        elif company is None and len(companies) > 1:
            problems.append(f"{p}: required: the file bills from {len(companies)} QuickBooks companies "
                            f"({', '.join(companies)}); say which one bills this client")
    return problems


# Valid files parsed, by (sha256 of the text, source): a month-end prices every client from the
# same text, and the Dagster assets each parse the `billing_rules` text they are handed (a
# 1,000-client file costs ~0.3 s to validate). Only valid files are kept, so an invalid one is
# validated, and its problems listed, every time; a few versions are enough (edits are rare).
_PARSED_MAX = 8
_parsed: OrderedDict[tuple[str, str], RulesFile] = OrderedDict()
_parsed_lock = threading.Lock()


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    """Parse and validate rules YAML. Raises RulesError listing every problem by path.

    The same text from the same source is validated once per process: the result is shared (a
    frozen model; callers never mutate it)."""
    key = (hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), source)
    with _parsed_lock:
        hit = _parsed.get(key)
        if hit is not None:
            _parsed.move_to_end(key)
            return hit
    rules = _validate(text, source)
    with _parsed_lock:
        _parsed[key] = rules
        while len(_parsed) > _PARSED_MAX:
            _parsed.popitem(last=False)
    return rules


def _validate(text: str, source: str) -> RulesFile:
    data, problems = load_yaml(text)
    if data is None and not problems:
        problems = ["<file>: empty rules file"]
    if problems and data is None:
        raise RulesError(problems)
    if not isinstance(data, dict):
        raise RulesError(problems + [f"<file>: expected a mapping at the top level, got {type(data).__name__}"])

    raw_clients = data.get("clients", {})
    top = {k: v for k, v in data.items() if k != "clients"}
    head: RulesFile | None = None
    try:
        head = RulesFile.model_validate(top)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, "")
    if raw_clients is None:
        raw_clients = {}
    if not isinstance(raw_clients, dict):
        problems.append(f"clients: expected a mapping of client key to rules, got {type(raw_clients).__name__}")
        raw_clients = {}

    clients: dict[str, ClientRules] = {}
    for key, raw in raw_clients.items():
        if not isinstance(key, str) or not CLIENT_KEY_RE.match(key):
            problems.append(f"clients.{key}: client key must match [a-z0-9_-]+")
            key = str(key)
        try:
            clients[key] = ClientRules.model_validate(raw)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, f"clients.{key}")

    # Client-level checks run even when the head is invalid (every problem is listed at once):
    # they then see the built-in firm settings and whatever defaults did validate.
    basis = head
    if basis is None:
        defaults = Defaults()
        try:
            defaults = Defaults.model_validate(data.get("defaults") or {})
        except ValidationError:
            pass
        basis = RulesFile(version=1, defaults=defaults)
    rules = basis.model_copy(update={"clients": clients, "source": source})
    harvest_ids: dict[int, str] = {}
    company_problems = _company_problems(rules, head is not None, raw_clients)
    problems += company_problems
    for key in clients:
        if company_problems:
            # currency defaults (the company's home currency) need a resolved company
            rules.clients[key] = clients[key].model_copy(update={"company": None})
        problems += _semantic_problems(rules, key, harvest_ids)
    if problems:
        raise RulesError(problems)
    assert head is not None
    return head.model_copy(update={"clients": clients, "source": source})


def load_rules(path: str | Path) -> RulesFile:
    """Read and validate a rules file (the only I/O in the billing package)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"<file>: cannot read {p}: {exc.strerror or exc}"]) from None
    return parse_rules(text, source=str(p))


def check_rules_file(path: str | Path) -> list[str]:
    """Every problem of a rules file, by path; empty when the file is valid."""
    try:
        load_rules(path)
    except RulesError as exc:
        return exc.problems
    return []
