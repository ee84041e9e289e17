"""Entry points behind `sync-pipelines sandbox serve|generate` (wired in sync_pipelines/cli.py)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from .fixture import FixtureError, load_fixture_file
from .generator import generate_fixture
from .http import dumps
from .server import SandboxServer


def serve_main(
    fixture_path: str | Path | None,
    host: str = "127.0.0.1",
    port: int = 0,
    state_file: str | Path | None = None,
    *,
    rate_limits: str | None = "real",
    qbo_latency: str | None = None,
    out=None,
) -> int:
    """Serve the sandbox until Ctrl-C (blocking). Returns the exit status.

    Args:
        fixture_path: fixture JSON (DESIGN §4 format); None serves an empty fixture.
        host: interface to listen on (default 127.0.0.1).
        port: TCP port; 0 picks a free one (printed in the exports).
        state_file: optional JSON file holding the live state: loaded when it exists (instead of
            the fixture) and rewritten atomically after every mutating request, so a second run
            sees the same QuickBooks invoices and the rotated QBO refresh token.
        rate_limits: "real" (default) or "off".
        qbo_latency: latency added to each QuickBooks call, e.g. "150-400ms" (default: none).
        out: stream for the `export NAME=value` lines (default stdout).

    Prints one `export NAME=value` line per DESIGN §8 variable (shell-quoted), then a comment
    line `# sandbox ready at URL`, flushed before serving, so `eval "$(... | head -n 13)"` or a
    reader waiting for the "ready" line works.
    """
    out = out or sys.stdout
    try:
        fixture = load_fixture_file(fixture_path) if fixture_path else {}
        server = SandboxServer(fixture, host=host, port=port, state_file=state_file, rate_limits=rate_limits,
                               qbo_latency=qbo_latency)
    except FixtureError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    server.bind()
    for name, value in server.env().items():
        print(f"export {name}={shlex.quote(value)}", file=out)
    print(f"# sandbox ready at {server.base_url} (admin: {server.base_url}/_sandbox/state)", file=out)
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def generate_main(
    clients: int,
    entries: int,
    seed: int,
    month: str,
    out_path: str | Path,
    rules_out_path: str | Path | None = None,
    dirty: bool = False,
) -> int:
    """Write a generated fixture (and its billing rules YAML). Returns the exit status.

    Args:
        clients: number of Harvest clients (>= 2; the last has no rules entry).
        entries: number of time entries.
        seed: random seed (same arguments, same files).
        month: "YYYY-MM", the month most entries fall in.
        out_path: where to write the fixture JSON.
        rules_out_path: where to write the rules YAML (None: not written).
        dirty: also append a few malformed records (`generator.DIRTY_KINDS`) for the clients to
            quarantine.
    """
    t0 = time.monotonic()
    try:
        fixture, rules_yaml = generate_fixture(clients=clients, entries=entries, seed=seed, month=month, dirty=dirty)
    except ValueError as exc:
        print(f"sandbox generate: {exc}", file=sys.stderr)
        return 2
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(dumps(fixture, ensure_ascii=False))
    if rules_out_path:
        Path(rules_out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(rules_out_path).write_text(rules_yaml, encoding="utf-8")
    print(f"wrote {out_path} ({clients} clients, {entries} time entries, seed {seed}, month {month}"
          + (", with malformed records" if dirty else "") + ")"
          + (f" and {rules_out_path}" if rules_out_path else "") + f" in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0
