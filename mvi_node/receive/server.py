"""Build and run the DICOM listener (Verification and Storage SCP)."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pynetdicom import AE, evt, _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from mvi_node.common.filepool import FilePool
from mvi_node.config import Settings
from mvi_node.config.sop_classes import ALL_STORAGE_SOP_CLASSES
from mvi_node.logs import shown
from mvi_node.receive import command_uids, incoming
from mvi_node.receive.association import NodeAssociation
from mvi_node.receive.balance import ConnectionBalance
from mvi_node.receive.handlers import ListenerHandlers

log = logging.getLogger("mvi_node.receive")


class NodeRequestHandler(RequestHandler):
    """One accepted connection: the TLS handshake (bounded by a timeout, in this
    connection's own thread, never in the accept loop), then pynetdicom's association."""

    def setup(self) -> None:
        ctx = getattr(self.server, "tls_handshake_context", None)
        if ctx is None:
            return
        raw = self.request
        raw.settimeout(self.server.tls_handshake_timeout)
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS handshake from %s failed: %s", self.client_address[0], shown(type(exc).__name__))
            raw.close()
            self.server.connection_ended()
            raise _HandshakeFailed from None
        tls.settimeout(None)  # pynetdicom polls the socket itself
        self.request = tls

    def handle(self) -> None:
        try:
            super().handle()  # the association built, EVT_CONN_OPEN, its thread started
        except BaseException:
            self.server.connection_ended()
            raise

    def _create_association(self):
        assoc = super()._create_association()
        NodeAssociation.adopt(assoc, self.server.ae.maximum_pdu_size + 64, getattr(self.server, "request_timeout", None))
        return assoc


class _HandshakeFailed(Exception):
    pass


class NodeServer(ThreadedAssociationServer):
    """The listener's server: connection threads are daemons (a stuck peer never holds
    shutdown), TLS is negotiated per connection (see :class:`NodeRequestHandler`).

    With ``balance`` (several listener processes, :mod:`.balance`) it accepts from
    ``listening``, the socket the processes share (None: its own, bound here, which the
    other processes then inherit), non-blocking, and leaves a waiting connection to a
    less busy process."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args, balance: ConnectionBalance | None = None, listening: socket.socket | None = None,
                 **kw) -> None:
        self.balance = balance
        self._inherited = listening
        super().__init__(*args, **kw)
        if balance is not None:
            self.socket.setblocking(False)  # the processes race for each connection

    def server_bind(self) -> None:
        if self._inherited is None:
            super().server_bind()
            return
        self.socket.close()
        self.socket = self._inherited
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._inherited is None:
            super().server_activate()

    def get_request(self):
        # The accepted socket as it is: wrapping it here would run the TLS handshake in
        # the accept loop, where one silent peer blocks every new association.
        if self.balance is not None and not self.balance.claim(self.socket):
            raise BlockingIOError("taken by another listener process")
        request = self.socket.accept()  # BlockingIOError: another process was quicker
        if self.balance is not None:
            self.balance.opened()
        return request

    def connection_ended(self) -> None:
        """A connection this process accepted ended before it became an association."""
        if self.balance is not None:
            self.balance.closed()

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], _HandshakeFailed):
            return
        log.exception("connection from %s failed", client_address[0] if client_address else "?")


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
    # pynetdicom counts every connection, also one that never asks for an association;
    # the node's own limit (ListenerHandlers.max_associations) counts only those that
    # asked. This one bounds the threads: as many again, at least 16, for connections
    # that stay silent (each closed by ARTIM within request_timeout_s).
    ae.maximum_associations = max_associations + max(16, max_associations)
    ae.maximum_pdu_size = cfg.max_pdu
    ae.require_called_aet = cfg.require_called_ae
    ae.network_timeout = cfg.network_timeout_s
    ae.acse_timeout = 30
    ae.dimse_timeout = cfg.network_timeout_s
    ae.add_supported_context(Verification)
    for uid in storage_sop_classes(settings):
        _register(uid)
        ae.add_supported_context(uid, cfg.transfer_syntaxes)
    return ae


def storage_sop_classes(settings: Settings) -> list[str]:
    cfg = settings.listener.sop_classes
    return list(ALL_STORAGE_SOP_CLASSES) if cfg == "all" else list(cfg)


def _register(uid: str) -> None:
    """A site-listed class pynetdicom does not know (a private one) is served as storage."""
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import register_uid, uid_to_service_class

    if uid_to_service_class(uid) is not StorageServiceClass:
        try:
            register_uid(uid, "Site_" + uid.replace(".", "_"), StorageServiceClass)
        except ValueError:
            pass


class Listener:
    """One listening socket served by threads (one per association); with ``balance``, one
    of several listener processes on that socket (``listening``: the first process's, None
    in the first process itself)."""

    def __init__(self, settings: Settings, handlers: ListenerHandlers, max_associations: int,
                 balance: ConnectionBalance | None = None, listening: socket.socket | None = None) -> None:
        self.settings = settings
        self.handlers = handlers
        incoming.install()
        command_uids.install()
        self.ae = build_ae(settings, max_associations)
        cfg = settings.listener
        self.server = self.ae.make_server(
            (cfg.host, cfg.port),
            ae_title=cfg.ae_title,
            evt_handlers=handlers.handlers() + ([(evt.EVT_CONN_CLOSE, balance.closed)] if balance else []),
            server_class=NodeServer,
            request_handler=NodeRequestHandler,
            balance=balance,
            listening=listening,
        )
        # TLS is this server's own business (per connection, with a timeout), not pynetdicom's.
        self.server.tls_handshake_context = tls_context(settings)
        self.server.tls_handshake_timeout = cfg.tls.handshake_timeout_s
        self.server.request_timeout = cfg.request_timeout_s
        spool_dir = settings.data_dir / "incoming"
        # Pool files only pay off where each instance is fsynced before it is acknowledged.
        self.pool = FilePool(spool_dir) if settings.staging.durability == "fsync" else None
        self.server.mvi_spool = incoming.Spool(spool_dir, cfg.max_instance_mb << 20, self.pool)
        # make_server() does not register the server; shutdown() expects it registered.
        self.ae._servers.append(self.server)
        self._thread: threading.Thread | None = None
        self.watchdog = incoming.DatasetWatchdog(self.ae, cfg.dataset_timeout_s, handlers.on_dataset_timeout)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="listener", daemon=True)
        if self.pool is not None:
            self.pool.start()
        if self.server.balance is not None:
            self.server.balance.join()
        self._thread.start()
        self.watchdog.start()
        cfg = self.settings.listener
        log.info(
            "listening as %s on %s:%d%s", cfg.ae_title, cfg.host, self.port, " (TLS)" if cfg.tls.enabled else ""
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; give associations in flight ``grace_seconds`` to finish."""
        self.watchdog.stop()
        if self.pool is not None:
            self.pool.stop()
        if self.server.balance is not None:
            self.server.balance.leave()
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
