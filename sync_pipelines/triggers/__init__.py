"""Near-real-time billing triggers (DESIGN §7): the deal sensor's tick and what a triggered deal bills.

No Dagster imports here: `defs/triggers/` wires these into the sensor and the deal assets.
"""
