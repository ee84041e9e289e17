"""Running the receiver: `sync-pipelines webhooks serve` (what `serve` starts) and :class:`ReceiverServer` (in a thread, for tests)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn

from sync_pipelines.serving import UvicornOnSocket, listen_socket
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.settings import ConfigError, ReceiverSettings

log = logging.getLogger("sync_pipelines.webhooks")


def _uvicorn_config(app: Any, log_level: str) -> uvicorn.Config:
    # No access log: at a thousand requests a second it would cost more than the requests, and
    # rejections are logged by the app itself (without signatures).
    return uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                          backlog=1024)


class ReceiverServer:
    """The receiver on a real loopback socket, in a background thread (port 0 = a free port)."""

    def __init__(self, settings: ReceiverSettings, ledger: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", **app_kwargs: Any) -> None:
        self.app = create_app(settings, ledger, **app_kwargs)
        self._uvicorn = UvicornOnSocket(lambda: _uvicorn_config(self.app, log_level), host, port, "webhooks")

    @property
    def base_url(self) -> str:
        return self._uvicorn.base_url

    @property
    def receiver(self) -> Any:
        return self.app.state.receiver

    def start(self) -> "ReceiverServer":
        self._uvicorn.start()
        return self

    def stop(self) -> None:
        self._uvicorn.stop()

    def __enter__(self) -> "ReceiverServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_main(host: str, port: int, *, log_level: str = "info") -> int:
    """`sync-pipelines webhooks serve`: the ledger from the environment, migrated, then uvicorn.

    Bad configuration is a one-line message and exit status 2; never a traceback."""
    from sync_pipelines.ledger import Ledger
    from sync_pipelines.ledger.base import LedgerError, ledger_url_from_env

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ReceiverSettings.from_env()
        url = ledger_url_from_env()
    except (ConfigError, LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ledger = Ledger(url)
        ledger.migrate()
    except Exception as exc:  # noqa: BLE001 - a clear line, not a traceback (the URL may hold a password)
        print(f"error: cannot open the ledger ({type(exc).__name__}: {_first_line(exc)}); check SYNC_DATABASE_URL",
              file=sys.stderr)
        return 2
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    base = f"http://{host}:{sock.getsockname()[1]}"
    print(f"Webhook receiver on {base}: POST /webhooks/hubspot, POST /webhooks/quickbooks, GET /healthz", flush=True)
    print(f"  HubSpot secret: {'set' if settings.hubspot_client_secret else 'NOT SET (every request rejected)'}; "
          f"Intuit verifier token: {'set' if settings.intuit_verifier_token else 'NOT SET (every request rejected)'}; "
          f"public URL: {settings.public_url or '(the URL of each request)'}", flush=True)
    server = uvicorn.Server(_uvicorn_config(create_app(settings, ledger), "warning" if log_level == "info" else log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        ledger.dispose()
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
