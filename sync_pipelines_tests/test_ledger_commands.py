"""`sync-pipelines ledger status | replay KEY | reissue KEY` as an operator uses them, against the
sandbox: replay finishes what a crash left (looking QuickBooks up first), never re-posts a posted
or drifted invoice nor a held one, and retries the key's CRM write-backs; reissue refuses a live
invoice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sync_pipelines import money
from sync_pipelines.cli import main
from sync_pipelines.connectors.factory import hubspot_from_env, quickbooks_from_env
from sync_pipelines.ledger import Ledger
from sync_pipelines.commands.ledger_commands import CommandError, check_voided, replay
from sync_pipelines.posting.drafts import posting_drafts
from sync_pipelines.posting.invoices import post_drafts
from sync_pipelines.posting.writeback import enqueue_writebacks
from sync_pipelines.sandbox import SandboxServer, generate_fixture
from sync_pipelines_tests import _sandbox_month as sm

PERIOD = "2026-10"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[SandboxServer, str]]:
    fixture, rules_yaml = generate_fixture(clients=4, entries=60, seed=21, month=PERIOD)
    with SandboxServer(fixture, rate_limits=None, rotate_refresh_tokens="never") as sb:
        yield sb, rules_yaml


@dataclass
class Ctx:
    sb: SandboxServer
    env: dict[str, str]
    url: str
    ledger: Ledger
    month: sm.Month
    rules_path: Path

    def qbo(self) -> Any:
        return quickbooks_from_env(self.ledger.tokens, self.env, audit=self.ledger)

    def inputs(self) -> Any:
        return lambda record: (self.month.entry_projects, self.month.deals, self.month.company_ids.get(record.client_key))


@pytest.fixture(params=BACKENDS)
def ctx(request: pytest.FixtureRequest, sandbox, tmp_path: Path) -> Iterator[Ctx]:
    sb, rules_yaml = sandbox
    sb.reset()
    url = f"sqlite:///{tmp_path}/ledger.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    ledger = Ledger(url, claim_seconds=0)  # a crashed attempt is resumable at once
    ledger.migrate()
    rules_path = tmp_path / "billing_rules.yaml"
    rules_path.write_text(rules_yaml)
    env = sb.env()
    c = Ctx(sb, env, url, ledger, sm.price(env, rules_yaml, PERIOD, ledger), rules_path)
    try:
        yield c
    finally:
        ledger.dispose()


def _begin(c: Ctx, inv: dict[str, Any], customer_ref: dict[str, str]) -> dict[str, Any]:
    """What the posting step records before calling QuickBooks; returns the payload sent."""
    payload = {**inv["payload"], "CustomerRef": customer_ref}
    r = c.ledger.begin_posting(
        inv["invoice_key"], realm_id=c.month.drafts["realm_id"], client_key=inv["client_key"], period=PERIOD,
        group_key=inv["group_key"], generation=inv["generation"], payload=payload,
        expected_total=money.to_decimal(inv["total"]), currency=inv["currency"], request_id=inv["request_id"],
        doc_number=inv["doc_number"], entries=[tuple(e) for e in inv["entries"]],
    )
    assert r.action == "post"
    return payload


def _count(c: Ctx, doc: str) -> int:
    return sum(1 for i in sm.qbo_invoices(c.env) if i.get("DocNumber") == doc)


def test_replay_finishes_what_a_crash_left_without_a_duplicate(ctx: Ctx) -> None:
    c = ctx
    landed, lost = c.month.drafts["invoices"][:2]
    with c.qbo() as qbo:
        ref = {"value": str(qbo.find_or_create_customer(landed["customer_name"])["Id"])}
        # Crash 1: QuickBooks created the invoice, the process died before record_posted.
        payload = _begin(c, landed, ref)
        qbo.create_invoice(payload, landed["request_id"])
        # Crash 2: the process died before the call.
        ref2 = {"value": str(qbo.find_or_create_customer(lost["customer_name"])["Id"])}
        _begin(c, lost, ref2)
        with hubspot_from_env(c.env, audit=c.ledger) as hubspot:
            first = replay(c.ledger, landed["invoice_key"], qbo=qbo, hubspot=hubspot, writeback_inputs=c.inputs())
            second = replay(c.ledger, lost["invoice_key"], qbo=qbo, hubspot=hubspot, writeback_inputs=c.inputs())
            again = replay(c.ledger, landed["invoice_key"], qbo=qbo, hubspot=hubspot, writeback_inputs=c.inputs())
    assert (first.status_before, first.outcome) == ("pending", "recovered") and first.ok
    assert (second.status_before, second.outcome) == ("pending", "posted") and second.ok
    assert again.outcome == "already_posted" and again.writebacks == []
    for inv in (landed, lost):
        assert _count(c, inv["doc_number"]) == 1
        record = c.ledger.get_invoice(inv["invoice_key"])
        assert record.status == "posted" and {s for _, _, s in record.entries} == {"billed"}
    assert first.writebacks and all(w.status == "done" for w in first.writebacks + second.writebacks)
    assert {r["status"] for r in sm.writeback_rows(c.ledger)} == {"done"}


def test_replay_never_reposts_held_drifted_or_voided_keys(ctx: Ctx) -> None:
    c = ctx
    inv = c.month.drafts["invoices"][0]
    with c.qbo() as qbo:
        with pytest.raises(CommandError, match="no invoice"):
            replay(c.ledger, "nope", qbo=qbo)
        c.ledger.record_held(inv["invoice_key"], reasons=["no rate for Design"], payload=inv["payload"],
                             realm_id=c.month.drafts["realm_id"], client_key=inv["client_key"], period=PERIOD,
                             group_key=inv["group_key"], generation=1, entries=[tuple(e) for e in inv["entries"]])
        with pytest.raises(CommandError, match=f"bill --month {PERIOD} --client {inv['client_key']}"):
            replay(c.ledger, inv["invoice_key"], qbo=qbo)
        assert _count(c, inv["doc_number"]) == 0

        outcomes = post_drafts(posting_drafts(c.month.drafts), qbo=qbo, ledger=c.ledger, home_currency="USD")
        assert {o.outcome for o in outcomes} == {"posted"}
        # The inputs change: the next run records drift; a replay must not turn it into a re-post.
        other = c.month.drafts["invoices"][1]
        changed = {**c.month.drafts, "invoices": [{**other, "total": money.to_decimal(other["total"]) + 1,
                                                    "payload": {**other["payload"], "CustomerMemo": {"value": "x"}}}]}
        [drift] = post_drafts(posting_drafts(changed), qbo=qbo, ledger=c.ledger, home_currency="USD")
        assert drift.outcome == "drift"
        result = replay(c.ledger, other["invoice_key"], qbo=qbo)
        assert result.outcome == "drift" and c.ledger.get_invoice(other["invoice_key"]).status == "drift"
        assert _count(c, other["doc_number"]) == 1

        c.ledger.record_voided(inv["invoice_key"])
        with pytest.raises(CommandError, match="ledger reissue"):
            replay(c.ledger, inv["invoice_key"], qbo=qbo)


def test_replay_waits_for_a_live_claim_unless_released(sandbox, tmp_path: Path) -> None:
    sb, rules_yaml = sandbox
    sb.reset()
    env = sb.env()
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db", claim_seconds=300)
    ledger.migrate()
    month = sm.price(env, rules_yaml, PERIOD, ledger)
    c = Ctx(sb, env, "", ledger, month, tmp_path)
    inv = month.drafts["invoices"][0]
    with c.qbo() as qbo:
        _begin(c, inv, {"value": str(qbo.find_or_create_customer(inv["customer_name"])["Id"])})
        busy = replay(ledger, inv["invoice_key"], qbo=qbo)
        assert busy.outcome == "busy" and not busy.ok
        done = replay(ledger, inv["invoice_key"], qbo=qbo, release_claim=True)
        assert done.outcome == "posted"
    assert _count(c, inv["doc_number"]) == 1
    ledger.dispose()


def test_a_live_invoice_cannot_be_reissued_a_deleted_one_can(ctx: Ctx) -> None:
    c = ctx
    with c.qbo() as qbo:
        outcomes = post_drafts(posting_drafts(c.month.drafts), qbo=qbo, ledger=c.ledger, home_currency="USD")
        live, deleted = outcomes[0], outcomes[1]
        with pytest.raises(CommandError, match="is not voided"):
            check_voided(c.ledger, live.key, qbo)
        assert c.ledger.get_invoice(live.key).status == "posted"
        record = c.ledger.get_invoice(deleted.key)
        current = qbo.get_invoice(record.qbo_id)
        qbo._request("POST", "/invoice", params={"operation": "delete"},
                     json_body={"Id": record.qbo_id, "SyncToken": current["SyncToken"]})
        assert check_voided(c.ledger, deleted.key, qbo).status == "voided"
        with pytest.raises(CommandError, match="nothing was issued"):
            c.ledger.record_held("R:x:2026-10:all:g1", reasons=["r"], payload={}, realm_id="R", client_key="x",
                                 period=PERIOD, group_key="all", generation=1)
            check_voided(c.ledger, "R:x:2026-10:all:g1", qbo)


def test_the_cli_status_replay_and_reissue(ctx: Ctx, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    c = ctx
    for name, value in c.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SYNC_DATABASE_URL", c.url)
    monkeypatch.setenv("SYNC_RULES_FILE", str(c.rules_path))
    inv = c.month.drafts["invoices"][0]
    with c.qbo() as qbo:
        outcomes = post_drafts(posting_drafts(c.month.drafts), qbo=qbo, ledger=c.ledger, home_currency="USD")
    keys = [o.key for o in outcomes]
    # The write-backs were queued but HubSpot was never reached (e.g. the run died).
    enqueue_writebacks(c.ledger, keys, c.month.entry_projects, c.month.deals, c.month.company_ids)
    assert main(["ledger", "status", "--month", PERIOD]) == 0
    status = capsys.readouterr().out
    assert "posted: 3" in status and "CRM write-backs not done yet" in status and "ledger replay KEY" in status

    assert main(["ledger", "replay", inv["invoice_key"]]) == 0
    out = capsys.readouterr().out
    assert "now already_posted" in out and "write-back to deal" in out and ": done" in out
    rows = {r["invoice_key"]: r["status"] for r in sm.writeback_rows(c.ledger)}
    assert rows[inv["invoice_key"]] == "done"

    assert main(["ledger", "reissue", inv["invoice_key"]]) == 2
    assert "is not voided" in capsys.readouterr().err
    assert main(["ledger", "replay", "no:such:key:all:g1"]) == 2
    assert _count(c, inv["doc_number"]) == 1
