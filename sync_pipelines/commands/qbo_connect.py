"""`sync-pipelines qbo connect` and `sync-pipelines qbo status`.

Connecting a QuickBooks company is Intuit's OAuth 2.0 authorization-code flow with a loopback
redirect: we print the authorize URL (and open it when asked), the user consents in the browser,
Intuit redirects to ``http://127.0.0.1:PORT/callback`` with ``code``, ``state`` and ``realmId``,
we check ``state`` (it is ours and single use: a forged redirect is refused), exchange the code
at the token endpoint and store the refresh token in the ledger's token store, where every later
run reads (and rotates) it. No token is ever printed or logged; `qbo status` shows each connected
company and when its tokens expire.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

from sync_pipelines import config

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
CALLBACK_PATH = "/callback"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ConnectError(RuntimeError):
    """The connection did not complete; the message says why (never a token)."""


@dataclass(frozen=True)
class Connected:
    realm_id: str
    refresh_expires_at: datetime | None
    access_expires_at: datetime | None


def authorize_url(base: str, client_id: str, redirect_uri: str, state: str) -> str:
    params = {"client_id": client_id, "response_type": "code", "scope": ACCOUNTING_SCOPE,
              "redirect_uri": redirect_uri, "state": state}
    return base + ("&" if "?" in base else "?") + urlencode(params)


class _Callback:
    """One redirect received on the loopback listener."""

    def __init__(self) -> None:
        self.params: dict[str, str] | None = None
        self.done = threading.Event()


def _listener(host: str, port: int, expected_state: str, callback: _Callback) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            if url.path != CALLBACK_PATH:
                self.send_error(404)
                return
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            # A redirect without our state is not the answer to our request (a stale tab, or a
            # forged link): ignore it and keep waiting for the real one.
            if not hmac.compare_digest(params.get("state", ""), expected_state) or callback.done.is_set():
                self._page(400, "This link does not belong to the connection in progress. Start "
                                "`sync-pipelines qbo connect` again if you need to.")
                return
            callback.params = params
            callback.done.set()
            ok = "code" in params and "error" not in params
            self._page(200 if ok else 400,
                       "QuickBooks is connected. You can close this tab." if ok else
                       f"QuickBooks did not connect: {params.get('error', 'no code')}. You can close this tab.")

        def _page(self, status: int, text: str) -> None:
            body = f"<!doctype html><title>sync_pipelines</title><p>{text}</p>".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the query holds the code
            return

    return HTTPServer((host, port), Handler)


def connect(
    *,
    ledger,  # noqa: ANN001 - sync_pipelines.ledger.Ledger
    authorize_base: str,
    token_url: str,
    client_id: str,
    client_secret: str,
    expected_realm: str | None = None,
    expected_source: str = "QBO_REALM_ID",
    host: str = "127.0.0.1",
    port: int = 0,
    show_url: Callable[[str], None],
    timeout_seconds: float = 300.0,
) -> Connected:
    """Run the authorization-code flow once; the tokens are in the ledger when this returns.

    ``show_url`` gets the authorize URL (the CLI prints it and may open a browser). With
    ``expected_realm`` (QBO_REALM_ID) a consent given for another company is refused and nothing
    is stored, so a run can never post to a company it was not configured for.
    """
    from sync_pipelines.connectors.quickbooks import QboOAuth, QboReconnectRequired

    state = secrets.token_urlsafe(32)
    callback = _Callback()
    server = _listener(host, port, state, callback)
    redirect_uri = f"http://{host}:{server.server_address[1]}{CALLBACK_PATH}"
    thread = threading.Thread(target=server.serve_forever, name="qbo-connect-callback", daemon=True)
    thread.start()
    try:
        show_url(authorize_url(authorize_base, client_id, redirect_uri, state))
        if not callback.done.wait(timeout_seconds):
            raise ConnectError(f"no answer from QuickBooks within {int(timeout_seconds)} s; nothing was stored")
    finally:
        server.shutdown()
        server.server_close()
    params = callback.params or {}
    if "error" in params:
        raise ConnectError(f"QuickBooks did not connect the app: {params['error']}; nothing was stored")
    code, realm = params.get("code"), params.get("realmId")
    if not code or not realm:
        raise ConnectError("QuickBooks' redirect carried no code or realmId; nothing was stored")
    if expected_realm and realm != expected_realm:
        raise ConnectError(f"the company you connected is realm {realm}, but {expected_source} is {expected_realm}: "
                           f"choose that company on Intuit's consent screen, or change {expected_source}; "
                           "nothing was stored")
    oauth = QboOAuth(token_url, client_id, client_secret, ledger.tokens, realm, audit=ledger)
    try:
        tokens = oauth.exchange_authorization_code(code, redirect_uri)
    except QboReconnectRequired:
        raise ConnectError("QuickBooks refused the authorization code (used, expired or for another redirect "
                           "URI); run `sync-pipelines qbo connect` again") from None
    finally:
        oauth.close()
    return Connected(realm, tokens.refresh_expires_at, tokens.access_expires_at)


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "unknown"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    days = (value - now).total_seconds() / 86400
    rel = f"in {days:.0f} days" if days >= 1 else ("expired" if days < 0 else f"in {days * 24:.1f} h")
    return f"{value.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} ({rel})"


def print_status(ledger, *, configured_realm: str | None, out: TextIO | None = None,  # noqa: ANN001
                 now: datetime | None = None, companies: dict[str, str] | None = None) -> int:
    """Each company (the rules' `companies:` {key: realm}, the configured realm, and any other
    connected realm) and its token expiry; never a token. 1 when a company the rules bill from
    (or the configured one) is not connected or its refresh token has expired."""
    out = out or sys.stdout
    now = now or datetime.now(timezone.utc)
    companies = companies or {}
    by_realm = {realm: key for key, realm in companies.items()}
    rows = {c.realm_id: c for c in ledger.tokens.connections()}
    needed = set(by_realm) | ({configured_realm} if configured_realm else set())
    realms = list(companies.values()) + sorted((set(rows) | needed) - set(by_realm))
    if not realms:
        out.write("No QuickBooks company is connected. Run `sync-pipelines qbo connect`.\n")
        return EXIT_FAILED
    code = EXIT_OK
    for realm in realms:
        key = by_realm.get(realm)
        mark = " (QBO_REALM_ID)" if realm == configured_realm else ""
        name = f"company {key} (realm {realm}){mark}" if key else f"realm {realm}{mark}"
        c = rows.get(realm)
        if c is None:
            out.write(f"{name}: not connected. Run `sync-pipelines qbo connect{' --company ' + key if key else ''}`.\n")
            if realm in needed:
                code = EXIT_FAILED
            continue
        expired = c.refresh_expires_at is not None and _aware(c.refresh_expires_at) <= now
        if expired and realm in needed:
            code = EXIT_FAILED
        out.write(f"{name}: {'refresh token EXPIRED, reconnect' if expired else 'connected'}; "
                  f"refresh token expires {_when(c.refresh_expires_at, now)}, last rotated "
                  f"{_when(c.refresh_rotated_at, now)}; access token expires {_when(c.access_expires_at, now)}\n")
    return code


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def rules_companies() -> dict[str, str]:
    """{company key: realm} of the rules file's `companies:` (SYNC_RULES_FILE); raises
    RulesError when the file is invalid."""
    from sync_pipelines.billing.rules import load_rules

    return {k: c.realm_id for k, c in (load_rules(config.rules_file()).companies or {}).items()}


def connect_main(*, port: int, open_browser: bool, out: TextIO | None = None, company: str | None = None) -> int:
    """The CLI: reads QBO_CLIENT_ID / QBO_CLIENT_SECRET / QBO_AUTHORIZE_URL / QBO_TOKEN_URL and
    (optional) QBO_REALM_ID from the environment; the ledger from SYNC_DATABASE_URL. With
    `company` (a key of the rules' `companies:`, SYNC_RULES_FILE) the consent must be for that
    company's realm_id."""
    from sync_pipelines.billing.rules import RulesError
    from sync_pipelines.ledger import Ledger

    out = out or sys.stdout
    expected, source = os.environ.get("QBO_REALM_ID") or None, "QBO_REALM_ID"
    if company is not None:
        try:
            known = rules_companies()
        except RulesError as exc:
            out.write(f"cannot read the companies of the rules file {config.rules_file()}:\n"
                      + "".join(f"  {p}\n" for p in exc.problems))
            return EXIT_USAGE
        if company not in known:
            out.write(f"no company {company!r} in the rules file {config.rules_file()} (companies: "
                      f"{', '.join(known) or 'none'})\n")
            return EXIT_USAGE
        expected, source = known[company], f"companies.{company}.realm_id"
    client_id, client_secret = os.environ.get("QBO_CLIENT_ID"), os.environ.get("QBO_CLIENT_SECRET")
    missing = [n for n, v in (("QBO_CLIENT_ID", client_id), ("QBO_CLIENT_SECRET", client_secret)) if not v]
    if missing:
        out.write(f"set {' and '.join(missing)} (your Intuit app's keys) first\n")
        return EXIT_USAGE

    def show(url: str) -> None:
        out.write("Open this URL, sign in to QuickBooks and choose the company to connect:\n\n  " + url + "\n\n")
        out.write("Waiting for QuickBooks to redirect back to this machine...\n")
        out.flush()
        if open_browser:
            webbrowser.open(url)

    ledger = Ledger(config.ledger_url())
    ledger.migrate()
    try:
        done = connect(ledger=ledger, authorize_base=config.setting("QBO_AUTHORIZE_URL"),
                       token_url=config.setting("QBO_TOKEN_URL"), client_id=client_id or "",
                       client_secret=client_secret or "", expected_realm=expected, expected_source=source,
                       port=port, show_url=show)
    except ConnectError as exc:
        out.write(f"not connected: {exc}\n")
        return EXIT_FAILED
    finally:
        ledger.dispose()
    now = datetime.now(timezone.utc)
    who = f"company {company} (realm {done.realm_id})" if company else f"realm {done.realm_id}"
    out.write(f"Connected QuickBooks {who}; the refresh token is stored in the ledger "
              f"(expires {_when(done.refresh_expires_at, now)}).\n")
    if not os.environ.get("QBO_REALM_ID") and company is None:
        out.write(f"Set QBO_REALM_ID={done.realm_id} for billing runs.\n")
    return EXIT_OK


def status_main(out: TextIO | None = None) -> int:
    from sync_pipelines.billing.rules import RulesError
    from sync_pipelines.ledger import Ledger

    ledger = Ledger(config.ledger_url())
    ledger.migrate()
    try:
        try:
            companies = rules_companies()
        except (RulesError, OSError):
            companies = {}  # no readable rules file: the connected realms alone
        return print_status(ledger, configured_realm=os.environ.get("QBO_REALM_ID") or None, out=out,
                            companies=companies)
    finally:
        ledger.dispose()
