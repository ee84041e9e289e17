"""`sync-pipelines`: bill Harvest time and HubSpot deals into QuickBooks Online, through Dagster.

    sync-pipelines sandbox serve --fixture FILE [--host 127.0.0.1 --port N] [--state-file FILE]
    sync-pipelines sandbox generate --clients N --entries M --seed S [--month YYYY-MM] --out FILE [--rules-out FILE]
    sync-pipelines rules check FILE
    sync-pipelines bill --month YYYY-MM [--client KEY] [--dry-run --out DIR] [--json]
    sync-pipelines ledger status [--month YYYY-MM] [--client KEY]
    sync-pipelines ledger replay KEY [--release-claim]
    sync-pipelines ledger reissue KEY
    sync-pipelines demo [--dir .demo] [--ui [--ui-port 3000]]
    sync-pipelines webhooks serve [--host 127.0.0.1 --port 8787]
    sync-pipelines serve [--sandbox] [--port 3000] [--webhooks-port 8787] [--dir .demo]
    sync-pipelines qbo connect [--port N] [--no-browser]
    sync-pipelines qbo status

`bill` exits 0 when every invoice is posted or already posted, 3 when the run completed but
some invoices are held (or drifted), 1 on failure, 143 / 130 when SIGTERM / SIGINT stopped it
at a safe point (between invoices; it prints what is done and what is left). No command ends in
a traceback: an unexpected error prints one `error:` line and exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def _month(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise argparse.ArgumentTypeError(f"expected YYYY-MM, got {value!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-pipelines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sandbox = sub.add_parser("sandbox", help="local simulator of Harvest, HubSpot and QuickBooks")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    serve = sandbox_sub.add_parser("serve", help="serve a fixture on the APIs' real paths")
    serve.add_argument("--fixture", required=True, type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--state-file", type=Path, default=None,
                       help="load state from here if it exists and save every change to it")
    serve.add_argument("--latency", default=None, metavar="LOW-HIGH",
                       help="latency added to every QuickBooks call, e.g. 150-400ms (default: none)")
    gen = sandbox_sub.add_parser("generate", help="write a realistic fixture (deterministic for a seed)")
    gen.add_argument("--clients", type=int, required=True)
    gen.add_argument("--entries", type=int, required=True)
    gen.add_argument("--seed", type=int, required=True)
    gen.add_argument("--month", type=_month, default=None, help="billing month of most entries (default: last month)")
    gen.add_argument("--out", type=Path, default=Path("fixture.json"))
    gen.add_argument("--rules-out", type=Path, default=None, help="also write a matching billing_rules.yaml here")
    gen.add_argument("--dirty", action="store_true", help="also add a few malformed records for the clients to quarantine")

    rules = sub.add_parser("rules", help="billing rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate a rules file; lists every problem by path")
    check.add_argument("file", type=Path)

    bill = sub.add_parser("bill", help="bill a month through the Dagster assets (runs show in the UI)")
    bill.add_argument("--month", type=_month, required=True)
    bill.add_argument("--client", default=None, help="only this client key")
    bill.add_argument("--dry-run", action="store_true", help="price only; post nothing")
    bill.add_argument("--out", type=Path, default=None, help="with --dry-run: write payloads, lines and a diff here")
    bill.add_argument("--json", action="store_true", help="print a JSON summary instead of the text listing")

    ledger = sub.add_parser("ledger", help="the sync ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    status = ledger_sub.add_parser("status", help="invoices by state: pending, failed, held, drift, posted")
    status.add_argument("--month", type=_month, default=None)
    status.add_argument("--client", default=None)
    replay = ledger_sub.add_parser(
        "replay", help="retry one invoice from the ledger (checks QuickBooks first), then its CRM write-backs")
    replay.add_argument("key", help="the invoice key, as `ledger status` prints it")
    replay.add_argument("--release-claim", action="store_true",
                        help="drop the in-flight claim of a pending key first (only when no run is posting it)")
    reissue = ledger_sub.add_parser(
        "reissue", help="after a void in QuickBooks: record it and bill the client's month as the next generation")
    reissue.add_argument("key", help="the voided invoice's key")

    qbo = sub.add_parser("qbo", help="the QuickBooks company connection")
    qbo_sub = qbo.add_subparsers(dest="qbo_command", required=True)
    connect = qbo_sub.add_parser(
        "connect", help="connect a QuickBooks company (OAuth in the browser); stores the refresh token in the ledger")
    connect.add_argument("--port", type=int, default=0,
                         help="loopback port for Intuit's redirect (register http://127.0.0.1:PORT/callback "
                              "as a redirect URI of your Intuit app; default: any free port)")
    connect.add_argument("--no-browser", action="store_true", help="only print the URL")
    qbo_sub.add_parser("status", help="each connected company and when its tokens expire (never a token)")

    demo = sub.add_parser("demo", help="generate data, serve the sandbox, bill last month, print the invoices")
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    demo.add_argument("--month", type=_month, default=None, help="default: the previous complete month")
    demo.add_argument("--ui", action="store_true", help="then keep the sandbox and the Dagster UI running")
    demo.add_argument("--port", type=int, default=8765, help="sandbox port")
    demo.add_argument("--ui-port", type=_port, default=3000, help="with --ui: the Dagster UI's port")

    webhooks = sub.add_parser("webhooks", help="the signed webhook receiver (HubSpot, QuickBooks)")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    wh_serve = webhooks_sub.add_parser("serve", help="receive signed webhooks into the ledger inbox (uvicorn)")
    wh_serve.add_argument("--host", default="127.0.0.1")
    wh_serve.add_argument("--port", type=_port, default=8787)

    trial = sub.add_parser("serve", help="Dagster UI + daemon + webhook receiver on this machine (a trial)")
    trial.add_argument("--sandbox", action="store_true",
                       help="also serve the sandbox with generated data, its webhooks pointed at the receiver")
    trial.add_argument("--host", default="127.0.0.1", help="interface for the UI and the receiver")
    trial.add_argument("--port", type=_port, default=3000, help="Dagster UI port")
    trial.add_argument("--webhooks-port", type=_port, default=8787, help="webhook receiver port")
    trial.add_argument("--sandbox-port", type=_port, default=8765, help="with --sandbox: the sandbox's port")
    trial.add_argument("--dir", type=Path, default=Path(".demo"),
                       help="with --sandbox: where the generated data, DAGSTER_HOME and the ledger live")
    return parser


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the operator gets one line, never a traceback
        from sync_pipelines.ledger import redact

        print(f"error: {redact.short_error(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        from sync_pipelines.sandbox import cli as sandbox_cli

        if args.sandbox_command == "serve":
            sandbox_cli.serve_main(args.fixture, args.host, args.port, args.state_file,
                                         qbo_latency=args.latency)
            return 0
        month = args.month or _previous_month()
        sandbox_cli.generate_main(args.clients, args.entries, args.seed, month, args.out, args.rules_out,
                                  dirty=args.dirty)
        return 0

    if args.command == "rules":
        from sync_pipelines.billing.rules import check_rules_file

        problems = check_rules_file(args.file)
        if problems:
            print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            return 1
        print(f"{args.file}: OK")
        return 0

    if args.command == "bill":
        from sync_pipelines.commands.billing_runs import bill_month, print_run, run_in_foreground, run_summary_json

        if args.out is not None and not args.dry_run:
            print("error: --out goes with --dry-run", file=sys.stderr)
            return 2
        run = run_in_foreground(
            lambda: bill_month(args.month, client=args.client, dry_run=args.dry_run, out_dir=args.out))
        if args.json:
            print(run_summary_json(run))
        else:
            print_run(run, dry_run=args.dry_run)
            if args.out is not None:
                print(f"Dry-run payloads, lines and diff written to {args.out}")
        return run.exit_code

    if args.command == "ledger":
        if args.ledger_command == "replay":
            from sync_pipelines.commands.ledger_commands import replay_main

            return replay_main(args.key, release_claim=args.release_claim)
        if args.ledger_command == "reissue":
            from sync_pipelines.commands.ledger_commands import reissue_main

            return reissue_main(args.key)
        from sync_pipelines.commands.ledger_status import print_status

        return print_status(month=args.month, client=args.client)

    if args.command == "qbo":
        from sync_pipelines.commands.qbo_connect import connect_main, status_main

        if args.qbo_command == "connect":
            return connect_main(port=args.port, open_browser=not args.no_browser)
        return status_main()

    if args.command == "demo":
        from sync_pipelines.commands.demo import run_demo

        return run_demo(args.dir, month=args.month, ui=args.ui, port=args.port, ui_port=args.ui_port)

    if args.command == "webhooks":
        from sync_pipelines.webhooks.server import serve_main as webhooks_serve_main

        return webhooks_serve_main(args.host, args.port)

    if args.command == "serve":
        from sync_pipelines.commands.serve import serve_main

        return serve_main(sandbox=args.sandbox, host=args.host, ui_port=args.port, webhooks_port=args.webhooks_port,
                          sandbox_port=args.sandbox_port, directory=args.dir)
    return 2


def _previous_month() -> str:
    from sync_pipelines.commands.demo import previous_month

    return previous_month()


if __name__ == "__main__":
    sys.exit(main())
