"""`sync-pipelines qbo connect` / `qbo status` over real loopback HTTP: the sandbox's authorize
endpoint redirects the "user" to our listener, the code is exchanged at the sandbox's token
endpoint, the refresh token lands in the ledger, and billing calls work with it. No token is
ever printed."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync_pipelines import cli
from sync_pipelines.commands.qbo_connect import ConnectError, connect, print_status
from sync_pipelines.connectors.quickbooks import QboOAuth, QuickBooksClient
from sync_pipelines.ledger import Ledger
from sync_pipelines.sandbox import SandboxServer, generate_fixture


@pytest.fixture
def sandbox():
    fixture, _ = generate_fixture(clients=2, entries=5, seed=3, month="2026-10")
    with SandboxServer(fixture, rate_limits=None) as sb:
        yield sb


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    led.migrate()
    yield led
    led.dispose()


def consenting_user(seen: list[str], tamper=None):
    """Follows the authorize URL in a 'browser' (httpx following the sandbox's 302 to our listener)."""
    def show(url: str) -> None:
        seen.append(url)

        def browse() -> None:
            target = tamper(url) if tamper else url
            seen.append(httpx.get(target, follow_redirects=True, timeout=10).text)
        threading.Thread(target=browse, daemon=True).start()
    return show


def _connect(sb: SandboxServer, ledger: Ledger, **kw):
    env = sb.env()
    return connect(ledger=ledger, authorize_base=env["QBO_AUTHORIZE_URL"], token_url=env["QBO_TOKEN_URL"],
                   client_id=env["QBO_CLIENT_ID"], client_secret=env["QBO_CLIENT_SECRET"], timeout_seconds=20, **kw)


def test_connect_stores_a_working_refresh_token_and_supersedes_the_old_one(sandbox: SandboxServer, ledger: Ledger) -> None:
    old_refresh = sandbox.env()["QBO_REFRESH_TOKEN"]
    seen: list[str] = []
    done = _connect(sandbox, ledger, expected_realm=sandbox.realm_id, show_url=consenting_user(seen))
    assert done.realm_id == sandbox.realm_id
    url = urlsplit(seen[0])
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/connect/oauth2" and q["response_type"] == "code"
    assert q["scope"] == "com.intuit.quickbooks.accounting" and len(q["state"]) >= 32
    assert q["redirect_uri"].startswith("http://127.0.0.1:") and q["redirect_uri"].endswith("/callback")
    stored = ledger.tokens.get(sandbox.realm_id)
    assert stored is not None and stored.refresh_token.get_secret_value() != old_refresh
    assert stored.refresh_token.get_secret_value() == sandbox.env()["QBO_REFRESH_TOKEN"]
    assert done.refresh_expires_at is not None and done.refresh_expires_at > datetime.now(timezone.utc) + timedelta(days=90)
    # the stored token drives a real API call (no QBO_REFRESH_TOKEN seed given)
    env = sandbox.env()
    oauth = QboOAuth(env["QBO_TOKEN_URL"], env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"], ledger.tokens, done.realm_id)
    with QuickBooksClient(env["QBO_BASE_URL"], done.realm_id, oauth) as qbo:
        assert qbo.company_info()["Country"] == "US"
    # the token call is audited by path only: no code, token or client secret in the audit rows
    rows = ledger.audit_records()
    assert any(r.path == "/oauth2/v1/tokens/bearer" and r.status == 200 for r in rows)
    audit_text = repr(rows)
    for secret in (stored.refresh_token.get_secret_value(), stored.access_token.get_secret_value(),
                   env["QBO_CLIENT_SECRET"], "sbx-ac-"):
        assert secret not in audit_text
    # a code the authorize endpoint never issued is refused
    forged = httpx.post(env["QBO_TOKEN_URL"], auth=(env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"]),
                        data={"grant_type": "authorization_code", "code": "sbx-ac-not-issued",
                              "redirect_uri": q["redirect_uri"]})
    assert forged.status_code == 400 and forged.json() == {"error": "invalid_grant"}


def test_a_redirect_for_another_company_or_without_our_state_stores_nothing(sandbox: SandboxServer, ledger: Ledger) -> None:
    with pytest.raises(ConnectError, match="QBO_REALM_ID is 999"):
        _connect(sandbox, ledger, expected_realm="999", show_url=consenting_user([]))
    assert ledger.tokens.get(sandbox.realm_id) is None

    def forged(url: str) -> str:  # someone else's state: our listener must not accept it
        return url.replace("state=", "state=forged")
    seen: list[str] = []
    with pytest.raises(ConnectError, match="no answer"):
        env = sandbox.env()
        connect(ledger=ledger, authorize_base=env["QBO_AUTHORIZE_URL"], token_url=env["QBO_TOKEN_URL"],
                client_id=env["QBO_CLIENT_ID"], client_secret=env["QBO_CLIENT_SECRET"], timeout_seconds=3,
                show_url=consenting_user(seen, tamper=forged))
    assert any("does not belong to the connection in progress" in s for s in seen[1:])
    assert ledger.tokens.connections() == []


def test_authorize_endpoint_is_as_strict_as_intuits(sandbox: SandboxServer) -> None:
    base = sandbox.env()["QBO_AUTHORIZE_URL"]
    ok = {"client_id": sandbox.env()["QBO_CLIENT_ID"], "response_type": "code",
          "scope": "com.intuit.quickbooks.accounting", "redirect_uri": "http://127.0.0.1:9/callback", "state": "s1"}
    r = httpx.get(base, params=ok)
    assert r.status_code == 302
    loc = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
    assert set(loc) == {"code", "state", "realmId"} and loc["state"] == "s1" and loc["realmId"] == sandbox.realm_id
    assert httpx.get(base, params={**ok, "client_id": "someone-else"}).status_code == 400
    for bad, error in (({"scope": "openid"}, "invalid_scope"), ({"response_type": "token"}, "unsupported_response_type")):
        r = httpx.get(base, params={**ok, **bad})
        assert r.status_code == 302 and f"error={error}" in r.headers["location"]
    # a code is bound to its redirect URI, and single use
    def exchange(code: str, redirect_uri: str) -> httpx.Response:
        return httpx.post(sandbox.env()["QBO_TOKEN_URL"], auth=(ok["client_id"], sandbox.env()["QBO_CLIENT_SECRET"]),
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})

    wrong = exchange(loc["code"], "http://127.0.0.1:10/callback")
    assert wrong.status_code == 400 and wrong.json() == {"error": "invalid_grant"}
    r = httpx.get(base, params={**ok, "state": "s2"})
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    first = exchange(code, ok["redirect_uri"])
    assert first.status_code == 200 and first.json()["refresh_token"] and first.json()["x_refresh_token_expires_in"]
    again = exchange(code, ok["redirect_uri"])
    assert again.status_code == 400 and again.json() == {"error": "invalid_grant"}


def test_status_shows_expiry_and_never_a_token(sandbox: SandboxServer, ledger: Ledger, tmp_path, monkeypatch, capsys) -> None:
    out = io.StringIO()
    assert print_status(ledger, configured_realm=sandbox.realm_id, out=out) == 1
    assert "not connected" in out.getvalue()
    _connect(sandbox, ledger, show_url=consenting_user([]))
    out = io.StringIO()
    assert print_status(ledger, configured_realm=sandbox.realm_id, out=out) == 0
    text = out.getvalue()
    assert f"realm {sandbox.realm_id} (QBO_REALM_ID): connected; refresh token expires" in text
    stored = ledger.tokens.get(sandbox.realm_id)
    assert stored.refresh_token.get_secret_value() not in text and stored.access_token.get_secret_value() not in text
    # through the CLI, against the same ledger
    monkeypatch.setenv("SYNC_DATABASE_URL", f"sqlite:///{tmp_path}/ledger.db")
    monkeypatch.setenv("QBO_REALM_ID", sandbox.realm_id)
    assert cli.main(["qbo", "status"]) == 0
    printed = capsys.readouterr().out
    assert "connected" in printed and stored.refresh_token.get_secret_value() not in printed


def test_the_cli_connects_through_the_browser_and_prints_no_token(sandbox: SandboxServer, tmp_path, monkeypatch, capsys) -> None:
    import webbrowser

    env = sandbox.env()
    for name in ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_AUTHORIZE_URL", "QBO_TOKEN_URL"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("QBO_REALM_ID", raising=False)
    monkeypatch.setenv("SYNC_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    pages: list[str] = []
    monkeypatch.setattr(webbrowser, "open", consenting_user(pages))
    assert cli.main(["qbo", "connect"]) == 0
    printed = capsys.readouterr().out
    assert f"Connected QuickBooks realm {sandbox.realm_id}" in printed and f"QBO_REALM_ID={sandbox.realm_id}" in printed
    assert "QuickBooks is connected" in pages[1]
    stored = Ledger(f"sqlite:///{tmp_path}/cli.db").tokens.get(sandbox.realm_id)
    assert stored is not None
    for secret in (stored.refresh_token.get_secret_value(), stored.access_token.get_secret_value(), env["QBO_CLIENT_SECRET"]):
        assert secret not in printed and secret not in pages[1]


# -- several companies (rules `companies:`): `qbo connect --company KEY`, `qbo status` per company

US_REALM, UK_REALM = "1234500001", "1234500002"


@pytest.fixture
def two_company_sandbox():
    fx = {"quickbooks": {"companies": {US_REALM: {}, UK_REALM: {"company_info": {"Country": "GB"}}}}}
    with SandboxServer(fx, rate_limits=None) as sb:
        yield sb


def _company_env(sb: SandboxServer, tmp_path, monkeypatch) -> None:
    env = sb.env()
    for name in ("QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_AUTHORIZE_URL", "QBO_TOKEN_URL"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("QBO_REALM_ID", raising=False)
    monkeypatch.setenv("SYNC_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""version: 1
companies: {{us: {{realm_id: "{US_REALM}"}}, uk: {{realm_id: "{UK_REALM}", home_currency: GBP}}}}
defaults: {{qbo: {{item: Consulting}}}}
clients:
  acme: {{harvest_client_id: 1, qbo_customer: Acme, company: us, rates: [{{rate: 100}}]}}
""")
    monkeypatch.setenv("SYNC_RULES_FILE", str(rules))


def test_connect_company_refuses_a_consent_for_another_company(two_company_sandbox, tmp_path, monkeypatch, capsys):
    import webbrowser

    sb = two_company_sandbox
    _company_env(sb, tmp_path, monkeypatch)
    monkeypatch.setattr(webbrowser, "open", consenting_user([]))
    # the user picks the US company on Intuit's screen while connecting uk
    httpx.post(f"{sb.base_url}/_sandbox/consent", json={"realm_id": US_REALM}).raise_for_status()
    assert cli.main(["qbo", "connect", "--company", "uk"]) == 1
    printed = capsys.readouterr().out
    assert f"the company you connected is realm {US_REALM}, but companies.uk.realm_id is {UK_REALM}" in printed
    assert "nothing was stored" in printed
    led = Ledger(f"sqlite:///{tmp_path}/cli.db")
    assert led.tokens.get(US_REALM) is None and led.tokens.get(UK_REALM) is None
    # an unknown company key is a usage error
    assert cli.main(["qbo", "connect", "--company", "fr"]) == 2
    assert "no company 'fr'" in capsys.readouterr().out


def test_connect_company_then_status_lists_each_company_without_a_token(two_company_sandbox, tmp_path, monkeypatch, capsys):
    import webbrowser

    sb = two_company_sandbox
    _company_env(sb, tmp_path, monkeypatch)
    monkeypatch.setattr(webbrowser, "open", consenting_user([]))
    httpx.post(f"{sb.base_url}/_sandbox/consent", json={"realm_id": UK_REALM}).raise_for_status()
    assert cli.main(["qbo", "connect", "--company", "uk"]) == 0
    assert f"Connected QuickBooks company uk (realm {UK_REALM})" in capsys.readouterr().out
    led = Ledger(f"sqlite:///{tmp_path}/cli.db")
    stored = led.tokens.get(UK_REALM)
    assert stored is not None
    # the stored token works on its own company only
    oauth = QboOAuth(sb.env()["QBO_TOKEN_URL"], sb.env()["QBO_CLIENT_ID"], sb.env()["QBO_CLIENT_SECRET"], led.tokens, UK_REALM)
    with QuickBooksClient(sb.env()["QBO_BASE_URL"], UK_REALM, oauth) as qbo:
        assert qbo.company_info()["Country"] == "GB"
    # us is not connected yet: status says so for us and exits 1
    assert cli.main(["qbo", "status"]) == 1
    printed = capsys.readouterr().out
    assert f"company us (realm {US_REALM}): not connected. Run `sync-pipelines qbo connect --company us`" in printed
    assert f"company uk (realm {UK_REALM}): connected; refresh token expires" in printed
    stored = led.tokens.get(UK_REALM)
    for secret in (stored.refresh_token.get_secret_value(), stored.access_token.get_secret_value() if stored.access_token else "",
                   sb.env()["QBO_CLIENT_SECRET"]):
        assert not secret or secret not in printed
    assert "sbx-rt-" not in printed and "sbx-at-" not in printed
