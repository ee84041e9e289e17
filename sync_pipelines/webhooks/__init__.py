"""The signed webhook receiver (DESIGN §7): HubSpot and QuickBooks events into the ledger inbox."""

from sync_pipelines.webhooks.app import HUBSPOT_PATH, QUICKBOOKS_PATH, create_app
from sync_pipelines.webhooks.settings import ReceiverSettings

__all__ = ["HUBSPOT_PATH", "QUICKBOOKS_PATH", "ReceiverSettings", "create_app"]
