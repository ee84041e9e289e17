"""Alerts to a Slack-compatible incoming webhook (DESIGN §7), or to the log when none is set.

An alert names the client, the period, the invoice key and links to the run, so the operator can
act from the message alone. The webhook URL is itself a secret (anyone holding it can post to the
channel): it is never logged, and delivery errors are reported without it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import httpx

from sync_pipelines.ledger import redact

log = logging.getLogger("sync_pipelines.alerts")


@dataclass(frozen=True)
class Alert:
    title: str
    lines: tuple[str, ...] = ()
    run_url: str | None = None
    link_text: str = "Open the run in Dagster"

    def text(self) -> str:
        body = "\n".join(f"• {line}" for line in self.lines)
        link = f"\n<{self.run_url}|{self.link_text}>" if self.run_url else ""
        return f"*{self.title}*" + (f"\n{body}" if body else "") + link


#: Environment variables whose values must never reach a channel (DESIGN §8).
SECRET_VARIABLES = (
    "HARVEST_ACCESS_TOKEN", "HUBSPOT_ACCESS_TOKEN", "HUBSPOT_CLIENT_SECRET", "QBO_CLIENT_SECRET",
    "QBO_REFRESH_TOKEN", "QBO_WEBHOOK_VERIFIER_TOKEN", "SLACK_WEBHOOK_URL",
)


def safe_text(text: str) -> str:
    """`text` without any configured secret or secret-looking value. An alert quotes error
    messages from APIs and Dagster; none should carry a secret, and this makes sure."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name) or ""
        if len(value) >= 8 and value in text:
            text = text.replace(value, redact.REDACTED)
    return redact.redact(text) or ""


def send(alert: Alert, *, webhook_url: str | None = None, timeout: float = 10.0) -> bool:
    """Post ``alert``; returns whether a webhook accepted it. Never raises: an alert that cannot be
    delivered is logged (without the URL) rather than failing the billing it reports on."""
    url = webhook_url if webhook_url is not None else os.environ.get("SLACK_WEBHOOK_URL")
    text = safe_text(alert.text())
    if url and len(url) >= 8:
        text = text.replace(url, redact.REDACTED)
    log.warning("%s", text)
    if not url:
        return False
    try:
        response = httpx.post(url, json={"text": text}, timeout=timeout)
    except httpx.HTTPError as exc:
        log.error("alert not delivered to the Slack webhook: %s", type(exc).__name__)
        return False
    if response.status_code >= 300:
        log.error("alert not delivered to the Slack webhook: HTTP %s", response.status_code)
        return False
    return True


def run_url(run_id: str) -> str | None:
    """Link to a run, when DAGSTER_WEBSERVER_URL says where the UI is (e.g. https://dagster.firm.internal)."""
    base = os.environ.get("DAGSTER_WEBSERVER_URL")
    return f"{base.rstrip('/')}/runs/{run_id}" if base else None


def automation_url() -> str | None:
    """Link to the UI's sensors and schedules with their ticks (a sensor tick has no run)."""
    base = os.environ.get("DAGSTER_WEBSERVER_URL")
    return f"{base.rstrip('/')}/automation" if base else None
