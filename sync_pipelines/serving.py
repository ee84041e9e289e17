"""An ASGI app served by uvicorn on a socket bound up front, in a background thread or the caller's.

Binding first means a busy port fails at once with a clear ``OSError``, and port 0 (any free
port, what tests use) is known before the server runs. Used by the sandbox and the webhook
receiver.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable

import uvicorn


def listen_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (for a child process that binds it itself)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM `proc`, then SIGKILL it if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class UvicornOnSocket:
    """``config()`` builds the uvicorn config (a fresh one per run); ``name`` names the thread."""

    def __init__(self, config: Callable[[], uvicorn.Config], host: str, port: int, name: str) -> None:
        self._config = config
        self.host = host
        self.port = port
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self) -> None:
        if self._sock is None:
            self._sock = listen_socket(self.host, self.port)
            self.port = self._sock.getsockname()[1]

    def start(self, timeout: float = 15.0) -> None:
        """Serve in a background thread; returns once uvicorn has started."""
        if self._server is not None:
            return
        self.bind()
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server failed to start")
            time.sleep(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C, SIGTERM)."""
        self.bind()
        assert self._sock is not None
        try:
            uvicorn.Server(self._config()).run(sockets=[self._sock])
        finally:
            self._sock.close()
            self._sock = None


def sandbox_env(proc: subprocess.Popen) -> dict[str, str] | None:
    """The environment a `sync-pipelines sandbox serve` child exports (its `export NAME=value`
    lines), read from its stdout up to its `# sandbox ready` line; None if it exits before."""
    import shlex

    env: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("export "):
            name, _, value = line[len("export "):].strip().partition("=")
            env[name] = shlex.split(value)[0] if value else ""
        elif line.startswith("# sandbox ready"):
            return env
    return None
