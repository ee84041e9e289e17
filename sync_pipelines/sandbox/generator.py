"""Deterministic demo data: a small consulting firm's month in Harvest, HubSpot and QuickBooks.

`generate_fixture(clients, entries, seed, month)` returns `(fixture, rules_yaml)`: a fixture in the
DESIGN §4 format and a billing rules file in the DESIGN §5 syntax that prices it. The same
arguments always give the same output. Entries are generated column-wise with numpy, so a
million entries over a thousand clients take seconds.

What it contains (so that tests can rely on it):
- Harvest: `clients` clients; the first is "O'Brien & Sons", the second "Café Zürich GmbH"; the
  last one has **no rules entry** (its time is "unassigned") and is also the QBO customer that is
  inactive. Every client bills in USD (the QBO company is USD, multicurrency off).
  1-3 projects per client (with codes), people, the tasks Design, Development, Project
  Management and Meetings. Time entries: mostly in `month` on weekdays, a few in the previous
  and next months and on weekends; hours with at most 2 decimals; about 10% non-billable;
  exactly one running entry (in `month`).
- Rules: `defaults` as in DESIGN §5; per client a base rate; some clients a dated rate (`from:`
  inside the month), a task rate for Design, one client a person+task rate, some a 15-minute
  rounding, a 10% discount, or `qbo: {item: "Consulting"}`. No retainers, caps or minimums.
- QuickBooks: items Services, Consulting, Design Services (Service); terms Net 30, Net 15,
  Due on receipt; class Consulting; one active customer named like the first rules client
  ("O'Brien & Sons") and one inactive customer (the unassigned Harvest client).
- HubSpot: one company per rules client, deals (some linked to a Harvest project through
  `harvest_project_id`, some with `billing_hourly_rate` (closed before the month, so the rate
  applies to the whole month) and `po_number`), deal->company associations (types 5 and 341).
- Edits after month end: about 2% of the month's finished entries (at least one) have an
  `updated_at` 1-6 days after the month's last day (notes corrected after month end). Only
  `updated_at` differs from an unedited entry, so no total changes.

With `dirty=True` a few malformed records are appended, in the APIs' own shapes (see
`DIRTY_KINDS`): Harvest time entries with `hours` null, `hours` "1:30" (h:mm text), no `task`
object, or a `spent_date` in ISO basic form ("20261015", which the sandbox can still date but a
YYYY-MM-DD parser rejects) - about 0.5% of `entries`, at least one of each; one HubSpot deal
linked to a billed project with `billing_hourly_rate` "n/a" and one with `harvest_project_id`
"ACME-1"; one QuickBooks item without `Name`. They get fresh ids after every clean record, and
everything before them is exactly the clean output for the same arguments (the dirty records
draw on their own random stream).
"""

from __future__ import annotations

import calendar
import datetime as dt
import gc
import json
import re
from decimal import Decimal
from typing import Any

import numpy as np

from . import credentials
from .fixture import DEFAULT_PREFERENCES

FIRST = ["Jane", "Omar", "Priya", "Lukas", "Sofia", "Chen", "Amara", "Mateo", "Hannah", "Kenji", "Zoë", "Liam",
         "Aisha", "Noah", "Elena", "Tomás", "Ingrid", "Ravi", "Grace", "Felix", "Maya", "Dmitri", "Chloé", "Sean"]
LAST = ["Doe", "Haddad", "Raman", "Becker", "Rossi", "Wei", "Okafor", "García", "Schmidt", "Sato", "Müller", "Walsh",
        "Khan", "Jensen", "Popescu", "Nakamura", "Larsen", "Iyer", "O'Connor", "Nguyen", "Silva", "Ivanov", "Dubois", "Brennan"]
NAME_A = ["Acme", "Blue Harbor", "Northwind", "Cobalt", "Summit", "Redwood", "Lumen", "Granite", "Meridian", "Vertex",
          "Harbor & Pine", "Silverline", "Orchard", "Keystone", "Atlas", "Beacon", "Cedar", "Juniper", "Polaris", "Quarry"]
NAME_B = ["Corp", "Labs", "Partners", "Holdings", "Group", "Analytics", "Logistics", "Health", "Studios", "Foods",
          "Energy", "Capital", "Systems", "Retail", "Media", "Robotics", "Outfitters", "Clinics", "Works", "Ventures"]
SPECIAL = ["O'Brien & Sons", "Café Zürich GmbH"]
TASKS = ["Design", "Development", "Project Management", "Meetings"]
TASK_WEIGHTS = np.array([0.25, 0.45, 0.15, 0.15])
#: The deal stage id of deals invoiced from their line items (rules `hubspot.ready_for_billing_stage`).
READY_FOR_BILLING_STAGE = "ready_for_billing"
#: The name (after the client's) of the line-item deal left in `contractsent` for a trial to move.
TRIAL_DEAL_NAME = "Fixed-fee package (to move)"
STAGES = ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "contractsent", "closedwon", "closedlost"]
COMMON_CENTI = np.array([25, 50, 75, 100, 110, 125, 150, 200, 233, 250, 300, 375, 400, 600, 750, 800])

ITEM_IDS = {"Services": "1", "Consulting": "2", "Design Services": "3"}


def _slug(name: str, used: set[str]) -> str:
    import unicodedata

    s = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_") or "client"
    base, n = s, 2
    while s in used:
        s = f"{base}_{n}"
        n += 1
    used.add(s)
    return s


def _hours_text(centi: int) -> Decimal:
    # the way Harvest prints hours: 1.1, 2.33, 7.5, 1.0
    whole, frac = divmod(int(centi), 100)
    if frac == 0:
        return Decimal(f"{whole}.0")
    return Decimal(f"{whole}.{frac:02d}".rstrip("0"))


def _money(v: int) -> str:
    return f"{v}.00"


#: What `dirty=True` appends: kind -> (collection, what is wrong with the record).
DIRTY_KINDS: dict[str, tuple[str, str]] = {
    "hours_null": ("harvest.time_entries", "hours is null"),
    "hours_text": ("harvest.time_entries", 'hours is the text "1:30"'),
    "task_missing": ("harvest.time_entries", "no task object"),
    "spent_date_basic": ("harvest.time_entries", 'spent_date in ISO basic form ("YYYYMMDD")'),
    "deal_rate_na": ("hubspot.deals", 'billing_hourly_rate "n/a" on a deal linked to a billed project'),
    "deal_project_code": ("hubspot.deals", 'harvest_project_id "ACME-1" (a code, not an id)'),
    "item_no_name": ("quickbooks.items", "an item without Name"),
}
#: Time entry kinds, in the order they are dealt out.
DIRTY_ENTRY_KINDS = ("hours_null", "hours_text", "task_missing", "spent_date_basic")
# Separate random streams (so neither changes anything the main stream draws).
_LATE_EDIT_STREAM = 1
_DIRTY_STREAM = 2


def generate_fixture(clients: int, entries: int, seed: int, month: str, dirty: bool = False) -> tuple[dict, str]:
    """Generate a realistic fixture and a matching rules YAML, deterministic for `seed`.

    Args:
        clients: number of Harvest clients (>= 2; the last one has no rules entry).
        entries: number of Harvest time entries (>= 1).
        seed: random seed; the same arguments give the same output.
        month: the billing month "YYYY-MM" most entries fall in.
        dirty: also append a few malformed records (see `DIRTY_KINDS`); the clean records and
            the rules YAML are the same as without it.
    """
    # Millions of small dicts make the cyclic GC rescan everything again and again (~40 % of the
    # time); nothing here creates cycles, so it is paused while generating.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        fixture, rules_yaml, ctx = _generate(clients, entries, seed, month)
        if dirty:
            _add_dirty(fixture, seed, ctx)
        return fixture, rules_yaml
    finally:
        if was_enabled:
            gc.enable()


def _generate(clients: int, entries: int, seed: int, month: str) -> tuple[dict, str, dict]:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    if clients < 2:
        raise ValueError("clients must be at least 2 (one of them is left without rules)")
    if entries < 1:
        raise ValueError("entries must be at least 1")
    rng = np.random.default_rng(seed)
    year, mon = int(month[:4]), int(month[5:])
    first = dt.date(year, mon, 1)
    last = dt.date(year, mon, calendar.monthrange(year, mon)[1])
    prev_last = first - dt.timedelta(days=1)
    prev_first = prev_last.replace(day=1)
    next_first = last + dt.timedelta(days=1)
    next_last = next_first.replace(day=calendar.monthrange(next_first.year, next_first.month)[1])
    stamp = dt.datetime(first.year, first.month, 1, 9, 0, tzinfo=dt.timezone.utc) - dt.timedelta(days=400)
    created_at = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")

    # ------------------------------------------------------------------ people and tasks
    n_users = int(min(300, max(4, clients * 2)))
    users = []
    used_people: set[str] = set()
    for i in range(n_users):
        fn, ln = FIRST[i % len(FIRST)], LAST[(i * 7 + i // len(FIRST)) % len(LAST)]
        if f"{fn} {ln}" in used_people:
            ln = f"{ln}-{i}"
        used_people.add(f"{fn} {ln}")
        users.append({"id": 4_100_000 + i, "first_name": fn, "last_name": ln, "email": f"user{i}@example-firm.test",
                      "is_active": True, "is_contractor": bool(i % 9 == 8), "timezone": "Eastern Time (US & Canada)",
                      "weekly_capacity": 144000, "default_hourly_rate": Decimal(150 + 10 * (i % 6)),
                      "cost_rate": Decimal(60 + 5 * (i % 5)), "roles": [], "created_at": created_at, "updated_at": created_at})
    tasks = [{"id": 8_200_000 + i, "name": t, "billable_by_default": t != "Meetings", "default_hourly_rate": Decimal(150),
              "is_default": True, "is_active": True, "created_at": created_at, "updated_at": created_at}
             for i, t in enumerate(TASKS)]

    # ------------------------------------------------------------------ clients and projects
    used_names: set[str] = set()
    names = []
    for i in range(clients):
        if i < len(SPECIAL):
            nm = SPECIAL[i]
        else:
            nm = f"{NAME_A[int(rng.integers(len(NAME_A)))]} {NAME_B[int(rng.integers(len(NAME_B)))]}"
            k = 2
            base = nm
            while nm in used_names:
                nm = f"{base} {k}"
                k += 1
        used_names.add(nm)
        names.append(nm)
    h_clients, projects = [], []
    proj_client: list[int] = []
    for i, nm in enumerate(names):
        cid = 5_700_000 + i
        h_clients.append({"id": cid, "name": nm, "is_active": True, "address": None, "statement_key": f"{cid:x}",
                          "currency": "USD", "created_at": created_at, "updated_at": created_at})
        n_proj = 1 + int(rng.integers(3))
        prefix = re.sub(r"[^A-Z]", "", nm.upper())[:3] or "PRJ"
        for j in range(n_proj):
            pid = 6_300_000 + len(projects)
            projects.append({"id": pid, "name": ["Website Redesign", "Data Platform", "Mobile App", "Retainer Support",
                                                 "Brand Refresh", "ERP Integration"][(i + j) % 6],
                             "code": f"{prefix}-{i + 1:03d}-{j + 1}", "is_active": True, "is_billable": True,
                             "is_fixed_fee": False, "bill_by": "Project", "hourly_rate": Decimal(150), "budget": None,
                             "budget_by": "none", "budget_is_monthly": False, "notes": "", "starts_on": None, "ends_on": None,
                             "client": {"id": cid, "name": nm, "currency": "USD"},
                             "created_at": created_at, "updated_at": created_at})
            proj_client.append(i)
    client_projects: list[list[int]] = [[] for _ in range(clients)]
    for p, c in enumerate(proj_client):
        client_projects[c].append(p)
    # a stable team (3-5 people) per client
    team = [rng.choice(n_users, size=min(n_users, 3 + int(rng.integers(3))), replace=False) for _ in range(clients)]

    # ------------------------------------------------------------------ entries (column-wise)
    weights = 1.0 / np.arange(1, clients + 1) ** 0.6
    weights = weights[rng.permutation(clients)]
    weights /= weights.sum()
    e_client = rng.choice(clients, size=entries, p=weights)
    # the unassigned client (the last one) always has some time, and so does the first client
    # (whose person + task rate must have entries to apply to)
    k = min(entries, max(3, entries // 100))
    picks = rng.choice(entries, size=min(entries, 2 * k), replace=False)
    e_client[picks[:k]] = clients - 1
    e_client[picks[k:]] = 0
    proj_pick = rng.random(entries)
    n_cp = np.array([len(client_projects[c]) for c in range(clients)])
    first_proj = np.array([client_projects[c][0] for c in range(clients)])
    e_project = first_proj[e_client] + (proj_pick * n_cp[e_client]).astype(np.int64)
    team_size = np.array([len(t) for t in team])
    team_flat = np.concatenate(team)
    team_off = np.concatenate([[0], np.cumsum(team_size)[:-1]])
    e_user = team_flat[team_off[e_client] + (rng.random(entries) * team_size[e_client]).astype(np.int64)]
    e_task = rng.choice(len(TASKS), size=entries, p=TASK_WEIGHTS)
    first_client_rows = picks[k:]
    if len(first_client_rows):  # the person of the person + task rate logs Design time
        e_user[first_client_rows[0]] = team[0][0]
        e_task[first_client_rows[0]] = 0
    # dates: ~94% in the month (weekdays mostly), ~3% previous month, ~3% next month
    which = rng.random(entries)

    def day_pool(a: dt.date, b: dt.date) -> tuple[np.ndarray, np.ndarray]:
        days = [a + dt.timedelta(days=k) for k in range((b - a).days + 1)]
        w = np.array([1.0 if d.weekday() < 5 else 0.04 for d in days])
        return np.array([d.toordinal() for d in days]), w / w.sum()

    pools = [day_pool(first, last), day_pool(prev_first, prev_last), day_pool(next_first, next_last)]
    e_ord = np.empty(entries, dtype=np.int64)
    masks = [which < 0.94, (which >= 0.94) & (which < 0.97), which >= 0.97]
    for (ords, w), m in zip(pools, masks):
        k = int(m.sum())
        if k:
            e_ord[m] = rng.choice(ords, size=k, p=w)
    common = rng.random(entries) < 0.6
    e_centi = np.where(common, COMMON_CENTI[rng.integers(len(COMMON_CENTI), size=entries)], rng.integers(5, 801, size=entries))
    e_billable = rng.random(entries) >= 0.10
    e_billable &= ~((e_task == 3) & (rng.random(entries) < 0.5))  # some meetings are never billable
    # ids ascend with the date, like a timesheet filled day by day
    order = np.lexsort((rng.random(entries), e_ord))
    e_client, e_project, e_user, e_task, e_ord, e_centi, e_billable = (
        a[order] for a in (e_client, e_project, e_user, e_task, e_ord, e_centi, e_billable))
    e_running = np.zeros(entries, dtype=bool)
    in_month = np.nonzero((e_ord >= first.toordinal()) & (e_ord <= last.toordinal()))[0]
    if len(in_month):
        e_running[in_month[-1]] = True

    # ------------------------------------------------------------------ rules
    rules_clients = clients - 1  # the last client has no rules entry
    slugs: list[str] = []
    used_slugs: set[str] = set()
    for i in range(rules_clients):
        slugs.append(_slug(names[i], used_slugs))
    base_rate = [int(rng.choice([125, 135, 150, 165, 175, 190, 200, 225])) for _ in range(clients)]
    person_task_client = 0 if rules_clients > 0 else -1

    # shared sub-objects (Harvest data is read-only in the sandbox, so sharing is safe)
    user_ref = [{"id": u["id"], "name": f"{u['first_name']} {u['last_name']}"} for u in users]
    client_ref = [{"id": c["id"], "name": c["name"], "currency": c["currency"]} for c in h_clients]
    project_ref = [{"id": p["id"], "name": p["name"], "code": p["code"]} for p in projects]
    task_ref = [{"id": t["id"], "name": t["name"]} for t in tasks]
    date_text = {int(o): dt.date.fromordinal(int(o)).isoformat() for o in np.unique(e_ord)}
    hours_cache: dict[int, Decimal] = {}
    ua_cache: dict[tuple[int, int], dict] = {}
    ta_cache: dict[tuple[int, int], dict] = {}
    rate_dec = {r: Decimal(f"{r}.0") for r in set(base_rate)}
    notes_pool = ["", "Client call", "Sprint work", "Wireframes", "Code review", "Status meeting", "Bug fixes",
                  "Workshop prep", "Deployment", "Research"]
    notes_idx = rng.integers(len(notes_pool), size=entries)

    time_entries: list[dict[str, Any]] = []
    append = time_entries.append
    id0 = 2_600_000_000
    cl_l, pr_l, us_l, tk_l, od_l, ce_l, bi_l, ru_l, no_l = (a.tolist() for a in (
        e_client, e_project, e_user, e_task, e_ord, e_centi, e_billable, e_running, notes_idx))
    for k in range(entries):
        c, p, u, t, o, cent, bill, run = cl_l[k], pr_l[k], us_l[k], tk_l[k], od_l[k], ce_l[k], bi_l[k], ru_l[k]
        hrs = hours_cache.get(cent)
        if hrs is None:
            hrs = hours_cache[cent] = _hours_text(cent)
        ua = ua_cache.get((p, u))
        if ua is None:
            ua = ua_cache[(p, u)] = {"id": 9_000_000 + len(ua_cache), "is_project_manager": False, "is_active": True,
                                     "budget": None, "created_at": created_at, "updated_at": created_at, "hourly_rate": None}
        ta = ta_cache.get((p, t))
        if ta is None:
            ta = ta_cache[(p, t)] = {"id": 9_500_000 + len(ta_cache), "billable": t != 3, "is_active": True,
                                     "created_at": created_at, "updated_at": created_at,
                                     "hourly_rate": rate_dec[base_rate[c]], "budget": None}
        spent = date_text[o]
        ts = spent + "T18:00:00Z"
        note = notes_pool[no_l[k]]
        append({
            "id": id0 + k, "spent_date": spent, "hours": hrs, "hours_without_timer": hrs, "rounded_hours": hrs,
            "notes": note or None, "is_locked": False, "locked_reason": None, "is_closed": False, "is_billed": False,
            "timer_started_at": ts if run else None, "started_time": "9:00am" if run else None, "ended_time": None,
            "is_running": run, "billable": bill, "budgeted": False,
            "billable_rate": rate_dec[base_rate[c]] if bill else None, "cost_rate": Decimal("60.0"),
            "created_at": ts, "updated_at": ts,
            "user": user_ref[u], "client": client_ref[c], "project": project_ref[p], "task": task_ref[t],
            "user_assignment": ua, "task_assignment": ta, "invoice": None, "external_reference": None,
        })

    # edits after month end: notes corrected a few days after the month closed (own random
    # stream; only `updated_at` changes, so nothing billed does)
    late_rng = np.random.default_rng([seed, _LATE_EDIT_STREAM])
    finished = in_month[~e_running[in_month]] if len(in_month) else in_month
    if len(finished):
        n_late = max(1, int(round(0.02 * len(finished))))
        late = np.sort(late_rng.choice(finished, size=n_late, replace=False))
        days = late_rng.integers(1, 7, size=n_late)
        secs = late_rng.integers(8 * 3600, 19 * 3600, size=n_late)
        for k, d, sec in zip(late.tolist(), days.tolist(), secs.tolist()):
            when = dt.datetime.combine(last, dt.time(), tzinfo=dt.timezone.utc) + dt.timedelta(days=d, seconds=sec)
            time_entries[k]["updated_at"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")

    # ------------------------------------------------------------------ HubSpot
    companies, deals, associations = [], [], []
    hs_ts = (dt.datetime(first.year, first.month, 1, tzinfo=dt.timezone.utc) - dt.timedelta(days=120))
    for i in range(rules_clients):
        coid = str(31_000_000_000 + i)
        nm = names[i]
        companies.append({"id": coid, "properties": {
            "name": nm, "domain": _slug(nm, set()).replace("_", "") + ".example", "createdate": hs_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "hs_lastmodifieddate": hs_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "hs_object_id": coid},
            "createdAt": hs_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "updatedAt": hs_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "archived": False})
    n_deals = 0
    for i in range(rules_clients):
        for j, p in enumerate(client_projects[i]):
            r = rng.random()
            if j > 0 and r < 0.5:
                continue
            did = str(42_000_000_000 + n_deals)
            n_deals += 1
            created = hs_ts + dt.timedelta(days=int(rng.integers(0, 60)), hours=int(rng.integers(0, 23)))
            closed = created + dt.timedelta(days=int(rng.integers(5, 50)))
            linked = r < 0.7
            props: dict[str, Any] = {
                "dealname": f"{names[i]} - {projects[p]['name']}", "amount": _money(int(rng.integers(10, 200)) * 500),
                "dealstage": "closedwon" if linked else STAGES[int(rng.integers(len(STAGES)))],
                "pipeline": "default", "createdate": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "closedate": closed.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "hs_lastmodifieddate": closed.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "hs_object_id": did,
                "deal_currency_code": "USD", "harvest_project_id": None, "billing_hourly_rate": None, "po_number": None,
            }
            if linked:
                props["harvest_project_id"] = str(projects[p]["id"])
                if rng.random() < 0.35 and i != person_task_client:
                    rate = base_rate[i] + 15
                    props["billing_hourly_rate"] = _money(rate)
                if rng.random() < 0.5:
                    po = f"PO-{int(rng.integers(10000, 99999))}"
                    props["po_number"] = po
            deals.append({"id": did, "properties": props, "createdAt": props["createdate"],
                          "updatedAt": props["hs_lastmodifieddate"], "archived": False})
            for type_id in (5, 341):
                associations.append({"from_type": "deals", "from_id": did, "to_type": "companies",
                                     "to_id": companies[i]["id"], "type_id": type_id})

    # deals invoiced from their line items (DESIGN §5 "Deals"; off unless the rules file has a
    # `hubspot: {ready_for_billing_stage: ready_for_billing}` section, which the generated one
    # does not). Added after every other record and without drawing on `rng`, so the time entries,
    # rules and other deals are exactly what they were; only clients whose every project already
    # has a linked deal get one (their time invoices never fall back to a company deal in the
    # ready-for-billing stage for write-backs).
    line_items: list[dict] = []
    linked_projects = {int(d["properties"]["harvest_project_id"]) for d in deals if d["properties"]["harvest_project_id"]}
    covered = [i for i in range(rules_clients)
               if client_projects[i] and all(int(projects[p]["id"]) in linked_projects for p in client_projects[i])]
    ready_at = dt.datetime(first.year, first.month, 15, 15, 0, tzinfo=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    created = hs_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def package(i: int, dealname: str, stage: str, po: str, modified: str, items: list[tuple[str, str, str, str]]) -> None:
        nonlocal n_deals
        did = str(42_000_000_000 + n_deals)
        n_deals += 1
        props: dict[str, Any] = {
            "dealname": f"{names[i]} - {dealname}", "amount": None, "dealstage": stage,
            "pipeline": "default", "createdate": created, "closedate": None,
            "hs_lastmodifieddate": modified, "hs_object_id": did, "deal_currency_code": "USD",
            "harvest_project_id": None, "billing_hourly_rate": None, "po_number": po}
        if stage == READY_FOR_BILLING_STAGE:
            # HubSpot's stage calculated properties: when the deal entered its current stage
            props[f"hs_v2_date_entered_{READY_FOR_BILLING_STAGE}"] = modified
            props[f"hs_date_entered_{READY_FOR_BILLING_STAGE}"] = modified
        deals.append({"id": did, "properties": props, "createdAt": created, "updatedAt": modified, "archived": False})
        for type_id in (5, 341):
            associations.append({"from_type": "deals", "from_id": did, "to_type": "companies",
                                 "to_id": companies[i]["id"], "type_id": type_id})
        for name, sku, price, qty in items:
            lid = str(43_000_000_000 + len(line_items))
            amount = (Decimal(price) * Decimal(qty)).quantize(Decimal("0.01"))
            line_items.append({"id": lid, "properties": {
                "name": name, "hs_sku": sku, "price": price, "quantity": qty, "amount": str(amount),
                "hs_product_id": None, "createdate": modified, "hs_lastmodifieddate": modified, "hs_object_id": lid},
                "createdAt": modified, "updatedAt": modified, "archived": False})
            associations.append({"from_type": "deals", "from_id": did, "to_type": "line_items", "to_id": lid, "type_id": 19})
            associations.append({"from_type": "line_items", "from_id": lid, "to_type": "deals", "to_id": did, "type_id": 20})

    packages = [[("Consulting", "Consulting", "150.00", "3"), ("Design Services", "Design Services", "95.50", "2.5")],
                [("Consulting", "Consulting", "1200.00", "1")]]
    for k, i in enumerate(covered[:2]):
        package(i, "Fixed-fee package", READY_FOR_BILLING_STAGE, f"PO-LI-{k + 1}", ready_at, packages[k])
    # one more package still in `contractsent`: the deal a trial (`serve --sandbox`, whose rules
    # set the stage) moves to the ready-for-billing stage to see the deal sensor bill it. Not in
    # the stage, so the month-end never bills it; same client rule as above for write-backs.
    if covered:
        package(covered[2] if len(covered) > 2 else covered[0], TRIAL_DEAL_NAME, "contractsent", "PO-TRIAL-1", created,
                [("Consulting", "Consulting", "1500.00", "2"), ("Design Services", "Design Services", "95.50", "4")])

    # ------------------------------------------------------------------ QuickBooks
    qbo_ts = (dt.datetime(first.year, first.month, 1) - dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%S-08:00")
    meta = {"CreateTime": qbo_ts, "LastUpdatedTime": qbo_ts}
    income = {"value": "79", "name": "Services"}
    items = [{"Id": iid, "Name": nm, "FullyQualifiedName": nm, "Type": "Service", "Active": True, "Taxable": False,
              "UnitPrice": 0, "IncomeAccountRef": income, "domain": "QBO", "sparse": False, "SyncToken": "0", "MetaData": dict(meta)}
             for nm, iid in ITEM_IDS.items()]
    terms = [{"Id": tid, "Name": nm, "Type": "STANDARD", "DueDays": days, "DiscountDays": 0, "Active": True,
              "domain": "QBO", "sparse": False, "SyncToken": "0", "MetaData": dict(meta)}
             for tid, nm, days in (("4", "Net 30", 30), ("5", "Net 15", 15), ("6", "Due on receipt", 0))]
    classes = [{"Id": "7", "Name": "Consulting", "FullyQualifiedName": "Consulting", "SubClass": False, "Active": True,
                "domain": "QBO", "sparse": False, "SyncToken": "0", "MetaData": dict(meta)}]

    def customer(cid: str, name: str, active: bool) -> dict:
        return {"Id": cid, "SyncToken": "0", "domain": "QBO", "sparse": False, "DisplayName": name,
                "FullyQualifiedName": name, "PrintOnCheckName": name, "CompanyName": name, "Active": active,
                "Taxable": False, "Job": False, "BillWithParent": False, "Balance": Decimal("0.00"),
                "BalanceWithJobs": Decimal("0.00"), "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
                "PreferredDeliveryMethod": "Print", "IsProject": False, "MetaData": dict(meta)}

    customers = [customer("58", names[0], True), customer("59", names[-1], False)]
    prefs = json.loads(json.dumps(DEFAULT_PREFERENCES))
    prefs["SalesFormsPrefs"]["DefaultTerms"] = {"value": "4"}

    fixture = {
        "harvest": {"clients": h_clients, "projects": projects, "users": users, "tasks": tasks, "time_entries": time_entries},
        "hubspot": {"companies": companies, "deals": deals, "line_items": line_items, "associations": associations},
        "quickbooks": {"realm_id": credentials.QBO_REALM_ID, "preferences": prefs, "customers": customers,
                       "items": items, "classes": classes, "terms": terms, "invoices": []},
    }

    # ------------------------------------------------------------------ rules YAML (DESIGN §5 syntax)
    def q(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)

    mid = first + dt.timedelta(days=14)
    out = [
        "# Generated by sync-pipelines sandbox generate "
        f"(clients={clients}, entries={entries}, seed={seed}, month={month}).",
        f"# Harvest client {h_clients[-1]['id']} ({names[-1]}) deliberately has no rules entry: its time is unassigned.",
        "version: 1",
        "firm: {timezone: America/New_York, home_currency: USD}",
        "defaults:",
        "  rounding: {increment_minutes: 6, mode: up, scope: entry}",
        '  invoice: {group_by: client, line_detail: task, terms: "Net 30"}',
        '  qbo: {item: "Services"}',
        "clients:",
    ]
    # every feature is spread over the clients by index (so a handful of clients covers them all),
    # starting at a seed-dependent offset
    o = [int(x) for x in rng.integers(0, 12, size=5)]
    for i in range(rules_clients):
        dated, task_rate = (i + o[0]) % 3 == 0, (i + o[1]) % 2 == 0
        round15, discount, consulting = (i + o[2]) % 4 == 0, (i + o[3]) % 4 == 1, (i + o[4]) % 3 == 2
        out.append(f"  {slugs[i]}:")
        out.append(f"    harvest_client_id: {h_clients[i]['id']}")
        out.append(f"    qbo_customer: {q(names[i])}")
        out.append(f"    hubspot_company_id: {q(companies[i]['id'])}")
        out.append("    currency: USD")
        out.append("    rates:")
        out.append(f"      - {{rate: {_money(base_rate[i])}}}")
        if dated:
            out.append(f"      - {{rate: {_money(base_rate[i] + 10)}, from: {mid.isoformat()}}}")
        if task_rate or i == person_task_client:
            out.append(f'      - {{rate: {_money(base_rate[i] + 25)}, task: "Design"}}')
        if i == person_task_client:
            person = users[int(team[i][0])]
            out.append(f'      - {{rate: {_money(base_rate[i] + 75)}, person: {q(person["first_name"] + " " + person["last_name"])}, task: "Design"}}')
        if round15:
            out.append("    rounding: {increment_minutes: 15, mode: up, scope: entry}")
        if discount:
            out.append("    discount: {percent: 10}")
        if consulting:
            out.append('    qbo: {item: "Consulting"}')
    rules_yaml = "\n".join(out) + "\n"
    ctx = {"first": first, "last": last, "rules_clients": rules_clients, "companies": companies,
           "client_projects": client_projects, "projects": projects, "names": names, "hs_ts": hs_ts,
           "n_deals": n_deals, "id0": id0, "entries": entries}
    return fixture, rules_yaml, ctx


def _add_dirty(fixture: dict, seed: int, ctx: dict) -> None:
    """Append the malformed records of `DIRTY_KINDS` (deterministic for `seed`, own random stream)."""
    rng = np.random.default_rng([seed, _DIRTY_STREAM])
    first, last = ctx["first"], ctx["last"]
    rules_clients = ctx["rules_clients"]
    entries_list: list[dict] = fixture["harvest"]["time_entries"]
    lo, hi = first.isoformat(), last.isoformat()
    rules_client_ids = {c["id"] for c in fixture["harvest"]["clients"][:rules_clients]}
    # templates: finished billable entries of rules clients in the month (any entry if none)
    pool = [k for k, e in enumerate(entries_list)
            if lo <= e["spent_date"] <= hi and e["billable"] and not e["is_running"]
            and e["client"]["id"] in rules_client_ids]
    if not pool:
        pool = list(range(len(entries_list)))
    n_bad = max(len(DIRTY_ENTRY_KINDS), int(round(0.005 * ctx["entries"])))
    picks = rng.choice(len(pool), size=n_bad, replace=n_bad > len(pool)).tolist()
    next_id = max(int(e["id"]) for e in entries_list) + 1
    for j, pick in enumerate(picks):
        kind = DIRTY_ENTRY_KINDS[j % len(DIRTY_ENTRY_KINDS)]
        e = dict(entries_list[pool[pick]])
        e["id"] = next_id + j
        if kind == "hours_null":
            e["hours"] = e["hours_without_timer"] = e["rounded_hours"] = None
        elif kind == "hours_text":
            e["hours"] = e["hours_without_timer"] = e["rounded_hours"] = "1:30"
        elif kind == "task_missing":
            del e["task"]
            e["task_assignment"] = None
        else:  # spent_date_basic
            e["spent_date"] = e["spent_date"].replace("-", "")
        entries_list.append(e)

    # HubSpot: a change-order deal whose rate nobody filled in properly, on the project with the
    # most billable time in the month, and a deal whose project field holds a code
    billed: dict[int, int] = {}
    for e in entries_list[: ctx["entries"]]:
        if lo <= e["spent_date"] <= hi and e["billable"] and e["client"]["id"] in rules_client_ids:
            billed[e["project"]["id"]] = billed.get(e["project"]["id"], 0) + 1
    projects = ctx["projects"]
    project_index = {p["id"]: i for i, p in enumerate(projects)}
    if billed:
        pid = min(billed, key=lambda p: (-billed[p], p))
    else:
        pid = projects[0]["id"]
    client_of = {p["id"]: p["client"]["id"] for p in projects}
    client_index = {c["id"]: i for i, c in enumerate(fixture["harvest"]["clients"])}
    rate_client = client_index[client_of[pid]]  # a rules client (only theirs were counted)
    code_client = int(rng.integers(rules_clients))
    hs = fixture["hubspot"]
    n_deals = ctx["n_deals"]
    hs_ts = ctx["hs_ts"]
    closed = (hs_ts + dt.timedelta(days=int(rng.integers(60, 100)))).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    created = hs_ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for kind, i, props in (
        ("deal_rate_na", rate_client, {
            "dealname": f"{ctx['names'][rate_client]} - {projects[project_index[pid]]['name']} (change order)",
            "harvest_project_id": str(pid), "billing_hourly_rate": "n/a"}),
        ("deal_project_code", code_client, {
            "dealname": f"{ctx['names'][code_client]} - Phase 2", "harvest_project_id": "ACME-1",
            "billing_hourly_rate": None}),
    ):
        did = str(42_000_000_000 + n_deals)
        n_deals += 1
        hs["deals"].append({"id": did, "properties": {
            "dealname": props["dealname"], "amount": _money(int(rng.integers(10, 200)) * 500), "dealstage": "closedwon",
            "pipeline": "default", "createdate": created, "closedate": closed, "hs_lastmodifieddate": closed,
            "hs_object_id": did, "deal_currency_code": "USD", "harvest_project_id": props["harvest_project_id"],
            "billing_hourly_rate": props["billing_hourly_rate"], "po_number": None},
            "createdAt": created, "updatedAt": closed, "archived": False})
        for type_id in (5, 341):
            hs["associations"].append({"from_type": "deals", "from_id": did, "to_type": "companies",
                                       "to_id": ctx["companies"][i]["id"], "type_id": type_id})

    # QuickBooks: an item without a Name (after every other record's Id)
    q = fixture["quickbooks"]
    next_qbo = max(int(r["Id"]) for coll in ("customers", "items", "classes", "terms", "invoices") for r in q[coll]) + 1
    meta = dict(q["items"][0]["MetaData"])
    q["items"].append({"Id": str(next_qbo), "Sku": "LEGACY-01", "Type": "Service", "Active": True, "Taxable": False,
                       "UnitPrice": 0, "IncomeAccountRef": {"value": "79", "name": "Services"}, "domain": "QBO",
                       "sparse": False, "SyncToken": "0", "MetaData": meta})


def add_portal_deals(fixture: dict, deals: int, seed: int, ready_every: int = 50,
                     start: dt.datetime | None = None, span_days: int = 90) -> int:
    """Append `deals` plain HubSpot deals (no company, no line items) to `fixture`, as a large
    portal has them: modified over `span_days` from `start`, one in `ready_every` in the ready-for-billing
    stage (with its stage-entered dates). For benchmarks of the deal sensor; returns how many are
    ready."""
    rng = np.random.default_rng(seed)
    hs = fixture.setdefault("hubspot", {})
    coll = hs.setdefault("deals", [])
    base = start or dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc)
    next_id = max([int(d["id"]) for d in coll] + [43_000_000_000]) + 1
    offsets = np.sort(rng.integers(0, span_days * 86_400_000, size=deals))
    ready = 0
    for n, off in enumerate(offsets.tolist()):
        did = str(next_id + n)
        when = (base + dt.timedelta(milliseconds=int(off)))
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        stage = READY_FOR_BILLING_STAGE if n % ready_every == 0 else STAGES[int(rng.integers(len(STAGES)))]
        props = {"dealname": f"Portal deal {n}", "amount": None, "dealstage": stage, "pipeline": "default",
                 "createdate": stamp, "closedate": None, "hs_lastmodifieddate": stamp, "hs_object_id": did,
                 f"hs_v2_date_entered_{stage}": stamp, f"hs_date_entered_{stage}": stamp}
        ready += stage == READY_FOR_BILLING_STAGE
        coll.append({"id": did, "properties": props, "createdAt": stamp, "updatedAt": stamp, "archived": False})
    return ready
