"""The implementations of the ``sync-pipelines`` CLI subcommands (``cli.py`` parses the arguments
and dispatches here): ``bill`` (billing_runs.py), ``ledger status`` (ledger_status.py),
``ledger replay|reissue`` (ledger_commands.py) and ``demo`` (demo.py).

The shared foundations they build on, ``money.py``, ``config.py`` and ``alerts.py``, stay at the
top level of ``sync_pipelines``.
"""
