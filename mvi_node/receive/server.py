"""Build and run the DICOM listener (Verification and Storage SCP)."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pynetdicom import AE, _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from mvi_node.config import Settings
from mvi_node.receive.handlers import ListenerHandlers

log = logging.getLogger("mvi_node.receive")


class SharedPortServer(ThreadedAssociationServer):
    """Sets SO_REUSEPORT so several listener processes share one port (one per core)."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.listener.tls
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(tls.client_ca))
    return ctx


def build_ae(settings: Settings, max_associations: int) -> AE:
    # pynetdicom's default handlers format every PDU and DIMSE message for its debug
    # log: a large share of the per-instance CPU, and the dumps can carry patient data.
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    cfg = settings.listener
    ae = AE(ae_title=cfg.ae_title)
    ae.maximum_associations = max_associations
    ae.maximum_pdu_size = cfg.max_pdu
    ae.require_called_aet = cfg.require_called_ae
    ae.network_timeout = cfg.network_timeout_s
    ae.acse_timeout = 30
    ae.dimse_timeout = cfg.network_timeout_s
    ae.add_supported_context(Verification)
    for uid in cfg.sop_classes:
        ae.add_supported_context(uid, cfg.transfer_syntaxes)
    return ae


class Listener:
    """One listening socket served by threads (one per association)."""

    def __init__(self, settings: Settings, handlers: ListenerHandlers, max_associations: int, shared_port: bool) -> None:
        self.settings = settings
        self.handlers = handlers
        self.ae = build_ae(settings, max_associations)
        cfg = settings.listener
        self.server = self.ae.make_server(
            (cfg.host, cfg.port),
            ae_title=cfg.ae_title,
            ssl_context=tls_context(settings),
            evt_handlers=handlers.handlers(),
            server_class=SharedPortServer if shared_port else ThreadedAssociationServer,
        )
        # make_server() does not register the server; shutdown() expects it registered.
        self.ae._servers.append(self.server)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="listener", daemon=True)
        self._thread.start()
        cfg = self.settings.listener
        log.info(
            "listening as %s on %s:%d%s", cfg.ae_title, cfg.host, self.port, " (TLS)" if cfg.tls.enabled else ""
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; give associations in flight ``grace_seconds`` to finish."""
        self.server.shutdown()
        self.server.server_close()
        deadline = time.monotonic() + grace_seconds
        # Only established associations can be mid-transfer; a bare TCP probe (a load
        # balancer's health check) would otherwise hold shutdown until the ACSE timeout.
        while any(a.is_established for a in self.ae.active_associations) and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in list(self.ae.active_associations):
            # Nothing unacknowledged is lost: the sender sees an abort and resends.
            assoc.abort()
