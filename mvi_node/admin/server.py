"""Run the admin API in a background thread of the node (uvicorn)."""

from __future__ import annotations

import logging
import threading

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("mvi_node.admin")


class AdminServer:
    """``tls``: HTTPS with ``(certificate, private_key, client_ca or None)``; with a
    client CA, clients must present a certificate it signed."""

    def __init__(self, app: FastAPI, host: str, port: int, tls: tuple | None = None) -> None:
        extra = {}
        if tls is not None:
            import ssl

            certificate, private_key, client_ca = tls
            extra = {"ssl_certfile": str(certificate), "ssl_keyfile": str(private_key)}
            if client_ca is not None:
                extra.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        self.scheme = "https" if tls is not None else "http"
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                                **extra)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="admin-http", daemon=True)

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", None) or []
        for srv in servers:
            for sock in srv.sockets:
                return sock.getsockname()[1]
        return self.server.config.port

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self.server.started:
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise RuntimeError("admin HTTP server did not start")
        log.info("admin API on %s://%s:%d", self.scheme, self.server.config.host, self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
