"""Billing rules, pricing and invoice payloads (DESIGN §5); pure, no I/O except `load_rules`."""

from sync_pipelines.billing.engine import BillingResult, price_month
from sync_pipelines.billing.history import BillingHistory, PostedInvoice
from sync_pipelines.billing.payload import expected_total, invoice_payload
from sync_pipelines.billing.rules import ClientRules, RulesError, RulesFile, check_rules_file, load_rules, parse_rules

__all__ = [
    "BillingHistory", "BillingResult", "ClientRules", "PostedInvoice", "RulesError", "RulesFile",
    "check_rules_file", "expected_total", "invoice_payload", "load_rules", "parse_rules", "price_month",
]
