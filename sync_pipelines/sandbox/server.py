"""`SandboxServer`: the sandbox app on a real loopback socket, in a background thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sync_pipelines.serving import UvicornOnSocket

from . import credentials
from .app import Sandbox, create_app
from .limits import RateLimits


class SandboxServer:
    """Serve the three simulated APIs (+ `/_sandbox/` admin) from `fixture` on a loopback port.

    Usage::

        with SandboxServer(fixture) as sb:
            env = sb.env()          # every DESIGN §8 variable, pointing at sb.base_url
            ...
            state = sb.state()      # current state, in the fixture format

    Args:
        fixture: a fixture dict (DESIGN §4; validated on construction, `FixtureError` lists problems).
        host, port: where to listen; port 0 picks a free port.
        state_file: if given, state is loaded from it when it exists (else from `fixture`) and
            written atomically after every mutating request.
        rate_limits: `RateLimits`, a dict of its fields, "real" (default: the published numbers),
            or None / "off" to disable limiting.
        rotate_refresh_tokens: "always" (default: every QBO refresh returns a new refresh token and
            invalidates the old one), "never", or N (rotate on every N-th refresh).
        qbo_latency: added to every QuickBooks API call, e.g. "150-400ms" (uniform in the range);
            None (default) adds none. `set_qbo_latency` changes it while serving.
    """

    def __init__(
        self,
        fixture: dict | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | Path | None = None,
        rate_limits: RateLimits | dict | str | None = "real",
        rotate_refresh_tokens: str | int = "always",
        log_level: str = "warning",
        qbo_latency: str | tuple[int, int] | None = None,
    ):
        self.sandbox = Sandbox(fixture or {}, state_file=state_file, rate_limits=rate_limits,
                               rotate_refresh_tokens=rotate_refresh_tokens, qbo_latency=qbo_latency)
        self.log_level = log_level
        self._uvicorn = UvicornOnSocket(self._config, host, port, "sandbox")

    # ------------------------------------------------------------------ lifecycle
    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(create_app(self.sandbox), log_level=self.log_level, access_log=False, lifespan="off",
                              timeout_graceful_shutdown=2)

    def start(self) -> "SandboxServer":
        self._uvicorn.start()
        return self

    def stop(self) -> None:
        self._uvicorn.stop(timeout=10)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C)."""
        self._uvicorn.serve_forever()

    def bind(self) -> None:
        """Bind the socket now (so `base_url` is known before `serve_forever`)."""
        self._uvicorn.bind()

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ info
    @property
    def host(self) -> str:
        return self._uvicorn.host

    @property
    def port(self) -> int:
        return self._uvicorn.port

    @property
    def base_url(self) -> str:
        return self._uvicorn.base_url

    @property
    def realm_id(self) -> str:
        return self.sandbox.st.realm_id

    def env(self) -> dict[str, str]:
        """Every DESIGN §8 connection variable, pointing at this server (no version paths)."""
        base = self.base_url
        with self.sandbox.st.lock:
            refresh = self.sandbox.st.refresh_token
        return {
            "HARVEST_BASE_URL": base,
            "HARVEST_ACCOUNT_ID": credentials.HARVEST_ACCOUNT_ID,
            "HARVEST_ACCESS_TOKEN": credentials.HARVEST_ACCESS_TOKEN,
            "HUBSPOT_BASE_URL": base,
            "HUBSPOT_ACCESS_TOKEN": credentials.HUBSPOT_ACCESS_TOKEN,
            "HUBSPOT_CLIENT_SECRET": credentials.HUBSPOT_CLIENT_SECRET,
            "QBO_BASE_URL": base,
            "QBO_TOKEN_URL": base + "/oauth2/v1/tokens/bearer",
            "QBO_AUTHORIZE_URL": base + "/connect/oauth2",
            "QBO_REALM_ID": self.realm_id,
            "QBO_CLIENT_ID": credentials.QBO_CLIENT_ID,
            "QBO_CLIENT_SECRET": credentials.QBO_CLIENT_SECRET,
            "QBO_REFRESH_TOKEN": refresh,
            "QBO_WEBHOOK_VERIFIER_TOKEN": credentials.QBO_WEBHOOK_VERIFIER_TOKEN,
        }

    def state(self) -> dict:
        """The current state in the fixture format (a deep copy: it loads again as a fixture)."""
        from sync_pipelines import money

        with self.sandbox.st.lock:
            return money.loads(self.sandbox.st.dump_json())

    # ------------------------------------------------------------------ conveniences for tests
    def reset(self) -> None:
        with self.sandbox.st.lock:
            self.sandbox.st.reset()
        self.sandbox.windows.clear()
        self.sandbox.persist()

    def set_faults(self, api: str = "all", **config: Any) -> None:
        """Same as `POST /_sandbox/faults`: e.g. `set_faults("quickbooks", rate_500=0.2, seed=1)`."""
        from .limits import FaultConfig

        for a in self.sandbox._apis(api):
            self.sandbox.faults[a] = FaultConfig.from_dict(config)

    def faults_injected(self) -> dict[str, int]:
        """How many faults were injected since start, per ``api:kind`` (e.g. ``quickbooks:429``)."""
        return {f"{api}:{kind}": n for (api, kind), n in sorted(self.sandbox.faults_injected.items())}

    def set_qbo_latency(self, latency: str | tuple[int, int] | None) -> None:
        """Latency added to every QuickBooks API call from now on ("150-400ms"; None: none)."""
        from .limits import parse_latency

        self.sandbox.qbo_latency = parse_latency(latency)

    def set_rate_limits(self, limits: RateLimits | dict | str | None) -> None:
        self.sandbox.rate_limits = RateLimits.coerce(limits)
        self.sandbox.windows.clear()

    def set_webhooks(self, hubspot_url: str | None = None, quickbooks_url: str | None = None,
                     quickbooks_format: str = "cloudevents") -> None:
        """Same as `POST /_sandbox/webhooks`: where signed webhooks go when data changes."""
        with self.sandbox.st.lock:
            self.sandbox.st.webhooks = {k: v for k, v in {"hubspot_url": hubspot_url, "quickbooks_url": quickbooks_url,
                                                          "quickbooks_format": quickbooks_format}.items() if v}
        self.sandbox.persist()

    def wait_webhooks(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook delivery has been attempted."""
        return self.sandbox.webhook_sender.wait_idle(timeout)

    def webhook_log(self) -> list[dict]:
        return list(self.sandbox.webhook_sender.log)

    def qbo_access_token(self) -> str:
        """Refresh once through the real token endpoint and return a valid QBO access token."""
        env = self.env()
        r = httpx.post(env["QBO_TOKEN_URL"], auth=(env["QBO_CLIENT_ID"], env["QBO_CLIENT_SECRET"]),
                       data={"grant_type": "refresh_token", "refresh_token": env["QBO_REFRESH_TOKEN"]},
                       headers={"Accept": "application/json"}, timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]
