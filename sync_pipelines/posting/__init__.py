"""Posting invoice drafts to QuickBooks exactly once (DESIGN §6), without Dagster."""
