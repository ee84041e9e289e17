"""QuickBooks change capture (DESIGN §7): voids, deletions and payments of the invoices we posted.

- ``classify``: what a QuickBooks record or webhook event says (pure);
- ``windows``: CDC window arithmetic, the 30-day limit and the 1,000-object cap (pure);
- ``detect``: the sensor's cheap part: inbox + CDC -> change sets of our invoices;
- ``record``: the run's part: current state -> ledger (voided, deleted, paid) -> CRM write-backs.
"""
