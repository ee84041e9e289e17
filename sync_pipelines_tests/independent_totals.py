"""Invoice totals computed straight from a fixture and a rules file, without the billing engine.

The end-to-end tests compare what QuickBooks holds after a run with these numbers. It is
deliberately plain (a loop over entries, Decimal throughout, the rules read as text) and covers
the subset of DESIGN §5 the fixture generator uses: dated and filtered rate rows with the score
rule, deal hourly rates, entry-scope rounding, `line_detail: task`, percent discounts.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import yaml

CENT = Decimal("0.01")


def _rules(rules_yaml: str) -> dict[str, Any]:
    # BaseLoader keeps every scalar a string: no float ever sees a rate.
    return yaml.load(rules_yaml, Loader=yaml.BaseLoader)


def _merged(defaults: dict, client: dict, section: str) -> dict:
    return {**defaults.get(section, {}), **client.get(section, {})}


def _matches(row: dict, entry: dict) -> bool:
    if "task" in row and row["task"] not in (entry["task"]["name"], str(entry["task"]["id"])):
        return False
    if "person" in row and row["person"] not in (entry["user"]["name"], str(entry["user"]["id"])):
        return False
    if "project" in row and row["project"] not in (str(entry["project"]["id"]), entry["project"].get("code")):
        return False
    day = entry["spent_date"]
    if "from" in row and day < row["from"]:
        return False
    if "to" in row and day > row["to"]:
        return False
    return True


def _rate(rows: list[dict], entry: dict) -> Decimal | None:
    best = None
    for row in rows:
        if not _matches(row, entry):
            continue
        score = 4 * ("project" in row) + 2 * ("person" in row) + ("task" in row)
        rank = (score, row.get("from", ""))
        if best is None or rank > best[0]:
            best = (rank, Decimal(row["rate"]))
    return None if best is None else best[1]


def _round_centi(raw: int, increment_minutes: int, mode: str) -> int:
    if increment_minutes == 0:
        return raw
    step = Decimal(increment_minutes * 100) / 60  # 6 min = 10 centihours, 15 min = 25
    units = Decimal(raw) / step
    rounding = {"up": ROUND_CEILING, "down": ROUND_FLOOR, "nearest": ROUND_HALF_UP}[mode]
    return int(units.quantize(Decimal(1), rounding=rounding) * step)


def expected_invoices(fixture: dict, rules_yaml: str, period: str) -> dict[str, dict[str, Decimal]]:
    """{qbo customer DisplayName: {"total": ..., "hours": ...}} for every client with an invoice."""
    rules = _rules(rules_yaml)
    defaults = rules.get("defaults", {})
    by_harvest = {int(c["harvest_client_id"]): (key, c) for key, c in rules["clients"].items()}
    deal_rows: dict[int, list[dict]] = defaultdict(list)
    for deal in fixture.get("hubspot", {}).get("deals", []):
        props = deal["properties"]
        if props.get("harvest_project_id") and props.get("billing_hourly_rate"):
            start = (props.get("closedate") or props.get("createdate"))[:10]
            deal_rows[int(props["harvest_project_id"])].append(
                {"rate": props["billing_hourly_rate"], "project": props["harvest_project_id"], "from": start}
            )

    lines: dict[str, dict[tuple[str, Decimal], int]] = defaultdict(lambda: defaultdict(int))
    for entry in fixture["harvest"]["time_entries"]:
        if not entry["billable"] or entry["is_running"] or not str(entry["spent_date"]).startswith(period):
            continue
        mapped = by_harvest.get(int(entry["client"]["id"]))
        if mapped is None:
            continue
        key, client = mapped
        rows = list(client.get("rates", [])) + deal_rows.get(int(entry["project"]["id"]), [])
        rate = _rate(rows, {**entry, "spent_date": str(entry["spent_date"])})
        assert rate is not None, f"fixture entry {entry['id']} has no rate: extend the oracle"
        rounding = _merged(defaults, client, "rounding")
        assert rounding.get("scope", "entry") == "entry"
        raw = int((Decimal(str(entry["hours"])) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        billed = _round_centi(raw, int(rounding["increment_minutes"]), rounding["mode"])
        assert _merged(defaults, client, "invoice").get("line_detail", "task") == "task"
        lines[key][(entry["task"]["name"], rate)] += billed

    out = {}
    for key, client_lines in lines.items():
        client = rules["clients"][key]
        subtotal = sum(
            ((Decimal(centi) / 100) * rate).quantize(CENT, rounding=ROUND_HALF_UP)
            for (_, rate), centi in client_lines.items()
        )
        discount = Decimal(0)
        if "percent" in client.get("discount", {}):
            discount = (subtotal * Decimal(client["discount"]["percent"]) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
        hours = sum(client_lines.values())
        out[client["qbo_customer"]] = {"total": subtotal - discount, "hours": Decimal(hours) / 100}
    return out
