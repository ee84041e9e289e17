"""What a triggered deal bills (DESIGN §5 "Deals", §7 "Deal sensor"), priced by the month-end's engine.

A deal that entered the ready-for-billing stage becomes at most one invoice, group key
``deal-<id>``, period = the month of the trigger in the firm's time zone:

- **with line items**: the line items, exactly as the month-end prices them
  (`billing/line_items.py`), so the month-end of that month computes the same key and payload
  and finds it already posted;
- **else, linked to a Harvest project** (`harvest_project_id`): that project's billable time of
  the trigger's month not billed yet (the ledger, and Harvest's `is_billed`), not running, spent
  up to and including the trigger day. Priced by the same engine with the client's rules and the
  deal's overrides (rate, discount percent, not-to-exceed, PO). The client's discount applies;
  its month cap applies and this invoice counts towards it, so the month-end invoice gets only
  what remains; its **minimum does not**: a minimum is a monthly floor, charged (if at all) on
  the month-end invoice, never on a milestone bill. A retainer client is not billed here: its
  time is consumed by the monthly retainer invoice. Earlier months' unbilled time is left to
  their own month-end runs (which bill or hold it visibly).

Exactly once per deal and generation: if the ledger already holds a live invoice for the deal
(posted, or drifted), a new trigger (the deal re-entered the stage) bills nothing; a pending,
failed or held one is re-priced under its own key (a retry resumes, a fixed hold posts); after
a void the next generation bills again. The entries it bills are, to the month-end, "already
billed on another invoice" (the existing selection rule), so the two together bill each entry once.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date

import pandas as pd

from sync_pipelines.billing.deals import cell_text
from sync_pipelines.billing.company import QboCompany
from sync_pipelines.billing.engine import BillingResult, price_month
from sync_pipelines.billing.history import BillingHistory
from sync_pipelines.billing.line_items import deal_group_key
from sync_pipelines.billing.rules import RulesFile
from sync_pipelines.triggers.stage_entry import StageEntry

LINE_ITEMS = "line_items"
PROJECT_TIME = "project_time"
#: ledger states of an invoice that QuickBooks holds (a new trigger must not bill the deal again)
LIVE = ("posted", "drift")


@dataclass(frozen=True)
class DealInvoiceRecord:
    """What the ledger says about an earlier invoice of the deal (`ledger.status` rows)."""

    key: str
    period: str
    status: str
    generation: int


@dataclass
class DealPlan:
    """What one trigger will bill, decided before anything is priced (the `ready_deal` asset)."""

    deal_id: str
    dealname: str | None
    entered_ms: int
    trigger_date: str  # ISO day in the firm's time zone
    period: str  # the invoice's period (the trigger's month, or that of the deal's earlier invoice)
    through: str  # ISO day: time is billed up to and including it
    client_key: str | None = None
    basis: str | None = None  # line_items | project_time | None (nothing to bill: see reason)
    harvest_project_id: int | None = None
    reason: str | None = None  # why nothing is billed (None when basis is set)
    already_invoiced: str | None = None  # the live invoice key when the deal was billed before
    needs_attention: bool = False  # nothing billed and an operator must act (alert)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DealPlan":
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    @property
    def group_key(self) -> str:
        return deal_group_key(self.deal_id)


def _month_end(period: str) -> date:
    y, m = int(period[:4]), int(period[5:7])
    return date(y, m, calendar.monthrange(y, m)[1])


def plan_deal(
    rules: RulesFile,
    trigger: StageEntry,
    deal: dict | None,
    has_line_items: bool,
    earlier: Iterable[DealInvoiceRecord] = (),
    retry: bool = False,
) -> DealPlan:
    """Decide what `trigger` bills. `deal` is the deal's row of the deals frame (built with the
    ready stage, so `stage_entered_at` is set) as HubSpot has it now; None when it is gone.
    `retry`: this same trigger ran before (a re-execution): its live invoice is priced again, so
    the posting step reports it already posted (or drift) and finishes its write-back."""
    from sync_pipelines.connectors.hubspot_stages import parse_hubspot_datetime

    tz = rules.firm.timezone
    day = trigger.trigger_date(tz)
    plan = DealPlan(deal_id=trigger.deal_id, dealname=None, entered_ms=trigger.entered_ms,
                    trigger_date=day.isoformat(), period=trigger.period(tz), through=day.isoformat())
    stage = rules.hubspot.ready_for_billing_stage if rules.hubspot else None
    if stage is None:
        plan.reason = "the rules set no hubspot.ready_for_billing_stage: deal triggers are off"
        return plan
    if deal is None:
        plan.reason = f"deal {trigger.deal_id} no longer exists in HubSpot"
        return plan
    plan.dealname = cell_text(deal.get("dealname"))
    if cell_text(deal.get("dealstage")) != stage:
        plan.reason = f"deal {trigger.deal_id} has left the {stage} stage (now {cell_text(deal.get('dealstage'))}): not billed"
        return plan
    now_entered = parse_hubspot_datetime(deal.get("stage_entered_at"))
    if now_entered is not None and now_entered != trigger.entered_ms:
        plan.reason = (f"deal {trigger.deal_id} re-entered {stage} since this trigger; the newer trigger "
                       f"(entered {deal.get('stage_entered_at')}) bills it")
        return plan

    company = cell_text(deal.get("company_id"))
    owners = sorted(k for k, c in rules.clients.items() if company and c.hubspot_company_id == company)
    if len(owners) != 1:
        plan.needs_attention = True
        plan.reason = (f"deal {trigger.deal_id} has no company" if not company else
                       f"deal {trigger.deal_id}: company {company} is the hubspot_company_id of no rules client"
                       if not owners else
                       f"deal {trigger.deal_id}: company {company} is the hubspot_company_id of several clients "
                       f"({', '.join(owners)})")
        return plan
    ck = plan.client_key = owners[0]

    pid = deal.get("harvest_project_id")
    plan.harvest_project_id = None if pid is None or pid is pd.NA else int(pid)
    if has_line_items:
        plan.basis = LINE_ITEMS
    elif plan.harvest_project_id is not None:
        if rules.effective(ck).billing_type == "retainer":
            plan.needs_attention = True
            plan.reason = (f"client {ck} is on a retainer: project {plan.harvest_project_id}'s time is billed on the "
                           "monthly retainer invoice, not on a deal invoice")
            return plan
        plan.basis = PROJECT_TIME
    else:
        plan.needs_attention = True
        plan.reason = f"deal {trigger.deal_id} has no line items and no harvest_project_id: nothing to bill"
        return plan

    # one deal, one invoice: the deal's earlier invoice fixes the period (and so the key)
    mine = sorted((r for r in earlier if r.key.split(":")[3:4] == [plan.group_key]),
                  key=lambda r: (r.period, r.generation))
    live = [r for r in mine if r.status in LIVE]
    if live and retry:
        plan.period = live[-1].period
    elif live:
        plan.already_invoiced = live[-1].key
        plan.period = live[-1].period
        plan.basis = None
        plan.reason = f"deal {trigger.deal_id} is already invoiced on {live[-1].key}: not billed again (void it to re-issue)"
        return plan
    if mine:
        plan.period = mine[-1].period  # pending, failed, held or voided: same period, the ledger picks the generation
    if day > _month_end(plan.period):
        plan.through = _month_end(plan.period).isoformat()
    return plan


def price_deal(
    rules: RulesFile,
    plan: DealPlan,
    deals: pd.DataFrame,
    line_items: pd.DataFrame | None,
    entries: pd.DataFrame,
    catalog: pd.DataFrame,
    history: BillingHistory,
    realm_id: str,
    company: QboCompany | None = None,
    today: date | None = None,
) -> BillingResult:
    """Price the plan's invoice with `price_month`, keeping only the deal's own invoice.

    `deals`: the deal's row (deals frame); `line_items`: its line items (LINE_ITEMS basis);
    `entries`: the project's time entries of the period up to `plan.through` (PROJECT_TIME).
    `company` / `today` as for `price_month`: the payload is fitted to the QuickBooks company
    exactly as the month-end fits it (so the month-end recomputes the same payload and finds the
    deal's invoice already posted), and time dated after today is never billed.
    """
    if plan.basis is None or plan.client_key is None:
        raise ValueError(f"deal {plan.deal_id}: nothing to price ({plan.reason})")
    ck = plan.client_key
    if plan.basis == LINE_ITEMS:
        result = price_month(rules, plan.period, entries.iloc[0:0], deals, catalog, history, realm_id, [ck],
                             line_items=line_items, company=company, today=today)
    else:
        client = rules.clients[ck]
        # the monthly minimum belongs to the month-end invoice (module docs)
        priced_rules = rules.model_copy(update={"clients": {**rules.clients, ck: client.model_copy(update={"minimum": None})}})
        through = date.fromisoformat(plan.through)
        mine = entries[(entries["project_id"].astype("Int64") == plan.harvest_project_id)
                       & (pd.Series([d <= through for d in entries["spent_date"]], index=entries.index, dtype=bool))
                       ] if len(entries) else entries
        result = price_month(priced_rules, plan.period, mine.reset_index(drop=True), deals, catalog, history,
                             realm_id, [ck], group_override=plan.group_key, company=company, today=today)
    return only_group(result, plan.group_key)


def only_group(result: BillingResult, group_key: str) -> BillingResult:
    """The result restricted to the invoice(s) of `group_key` (a retainer client's fee invoice
    or another deal's never ride along)."""
    inv = result.invoices[result.invoices["group_key"] == group_key].reset_index(drop=True)
    keys = set(inv["invoice_key"])
    lines = result.lines[result.lines["invoice_key"].isin(keys)].reset_index(drop=True)
    entries = result.entries
    return BillingResult(period=result.period, realm_id=result.realm_id, home_currency=result.home_currency,
                         entries=entries, lines=lines, invoices=inv, rules_source=result.rules_source,
                         extras=result.extras)


__all__ = ["DealInvoiceRecord", "DealPlan", "LINE_ITEMS", "PROJECT_TIME", "plan_deal", "price_deal", "only_group"]
