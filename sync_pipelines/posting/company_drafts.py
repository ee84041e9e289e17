"""Drafts documents of several QuickBooks companies (DESIGN §5 "Many QuickBooks companies").

A firm with several legal entities prices each company's clients against that company (its
settings, catalog and realm: `billing.company_pricing`), so a month has one drafts document per
company. The stored month keeps them as one document whose invoices each name their company,
realm and home currency; posting splits it again (`company_batches`) and posts each company with
its own client, so one company's outage or refused token never touches another's invoices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync_pipelines.posting.drafts import PostingDraft, drafts_document, posting_drafts


def company_drafts_document(results: Mapping[str | None, Any], entries: Any) -> dict[str, Any]:
    """One drafts document from ``{company key: BillingResult}`` (None: the company of
    QBO_REALM_ID); the top-level realm and home currency are the first company's, so a
    one-company document reads as before."""
    docs = {key: drafts_document(result, entries) for key, result in results.items()}
    if not docs:
        raise ValueError("no company to build a drafts document for")
    first = next(iter(docs.values()))
    invoices = []
    for key, doc in docs.items():
        for inv in doc["invoices"]:
            invoices.append({**inv, "company": key, "realm_id": doc["realm_id"], "home_currency": doc["home_currency"]})
    return {
        "period": first["period"], "realm_id": first["realm_id"], "home_currency": first["home_currency"],
        "company": first["company"],
        "companies": {("" if key is None else key): {"realm_id": doc["realm_id"], "home_currency": doc["home_currency"],
                                                      "settings": doc["company"]}
                      for key, doc in docs.items()},
        "invoices": invoices,
    }


@dataclass(frozen=True)
class CompanyBatch:
    """The drafts of one company, with what posting them needs."""

    company: str | None  # the rules' company key (None: the company of QBO_REALM_ID)
    realm_id: str
    home_currency: str
    drafts: list[PostingDraft]

    @property
    def label(self) -> str:
        """How alerts and messages name the company."""
        return f"company {self.company} (realm {self.realm_id})" if self.company else f"realm {self.realm_id}"


def company_batches(document: dict[str, Any]) -> list[CompanyBatch]:
    """The document's drafts grouped by company, in document order."""
    drafts = posting_drafts(document)
    out: dict[str, CompanyBatch] = {}
    for draft, inv in zip(drafts, document["invoices"]):
        realm = draft.realm_id
        if realm not in out:
            out[realm] = CompanyBatch(inv.get("company") or None, realm,
                                      inv.get("home_currency") or document["home_currency"], [])
        out[realm].drafts.append(draft)
    return list(out.values())
