"""pynetdicom's acceptor association, as the node's listener runs it.

Three changes to pynetdicom 3's classes, made per association by the listener's request
handler (``__class__`` swapped on the objects pynetdicom built), so the node's SCU side
(replay, dispatch) keeps pynetdicom's behaviour:

- **Requests are served on wake-up, not on a poll.** pynetdicom runs two loops per
  association that sleep 1 ms whenever they find nothing to do: the DUL's (socket in,
  PDUs out) and the association's (DIMSE requests to the handler). Each C-STORE crosses
  three of those sleeps (the request in, the request to the handler, the response out),
  and on a busy machine a 1 ms sleep often costs several before the thread runs again.
  Here the DUL waits in ``select`` on its socket and on a wake-up socket that every
  outgoing primitive pokes, and the association waits on its DIMSE queue. Idle, each
  wakes every :data:`IDLE_WAIT` seconds to check timers and release/abort, as before.
- **A PDU longer than the limit** ends the connection instead of being buffered whole.
- **A connection that sends no association request** is closed after ``request_timeout``
  (a load balancer's TCP check), not after the ACSE timeout.
- **A C-STORE naming a SOP class pynetdicom has no service for** is answered with a
  status by the node's handler instead of aborting the association.
- **C-STORE command sets are decoded and encoded by hand** (:mod:`.command_set`): a
  plain C-STORE-RQ and its C-STORE-RSP skip pydicom's datasets, about a quarter of the
  listener's Python time per instance; anything else takes pynetdicom's path.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
from pathlib import Path

from pydicom.uid import UID
from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket

from mvi_node.receive import command_set

log = logging.getLogger("mvi_node.receive")

#: PDUs other than P-DATA (A-ASSOCIATE-RQ with many contexts, user identity) may be
#: larger than the negotiated maximum PDU; nothing legitimate comes near this.
PDU_FLOOR = 1 << 20
#: how long an idle loop waits before it checks its timers and flags again (pynetdicom: 1 ms)
IDLE_WAIT = 0.02


class NodeSocket(AssociationSocket):
    """The association's socket: bounded PDU reads, and ``ready`` that waits (see module)."""

    max_read = PDU_FLOOR
    _wake_r: socket.socket | None = None

    def recv(self, nr_bytes: int) -> bytearray:
        # pynetdicom reads a PDU by the length its header announces, into memory: a
        # hostile 4 GiB "PDU" would be buffered whole; a short read ends the connection.
        if nr_bytes > self.max_read:
            log.warning("connection closed: a PDU of %d bytes announced (limit %d)", nr_bytes, self.max_read)
            return bytearray()
        # pynetdicom reads 4 KiB per call (33 system calls and copies for a 128 KiB PDU);
        # here as much as the socket holds, straight into the PDU's buffer.
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        got = 0
        try:
            while got < nr_bytes:
                n = self.socket.recv_into(view[got:])
                if not n:  # connection closed: what arrived, as pynetdicom returns it
                    break
                got += n
        finally:
            view.release()
        if got < nr_bytes:
            del buffer[got:]
        return buffer

    @property
    def ready(self) -> bool:
        """True when data can be read; otherwise waits up to :data:`IDLE_WAIT`, or until
        the DUL is woken because something is to be sent, and returns False."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes buffered that select cannot see
        wake = self._wake_r
        try:
            ready, _, _ = select.select([sock] if wake is None else [sock, wake], [], [], IDLE_WAIT)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # transport closed, as pynetdicom's ready()
            return False
        if wake is not None and wake in ready:
            _drain(wake)
        return sock in ready


def _drain(wake: socket.socket) -> None:
    try:
        while wake.recv(4096):
            pass
    except OSError:  # BlockingIOError: drained; closed: the association is ending
        pass


class NodeDUL(DULServiceProvider):
    """The DUL, woken when a primitive is queued to send instead of polling for it."""

    _wake_w: socket.socket | None = None

    def attach_wakeup(self, sock: NodeSocket) -> None:
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        sock._wake_r, self._wake_w = r, w
        self._run_loop_delay = 0  # the wait happens in NodeSocket.ready

    def wake(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"\0")
            except OSError:  # buffer full (a wake-up is pending anyway) or closed
                pass

    def send_pdu(self, primitive) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        # pynetdicom waits for the thread to end in a loop of _run_loop_delay sleeps
        self._run_loop_delay = 0.001
        self.wake()
        return super().stop_dul()

    def close_wakeup(self) -> None:
        sock = self.socket
        for s in (self._wake_w, getattr(sock, "_wake_r", None)):
            if s is not None:
                s.close()


class NodeDIMSE(DIMSEServiceProvider):
    """The DIMSE provider, with C-STORE command sets decoded and encoded by hand.

    A P-DATA whose one PDV is a whole C-STORE-RQ command set that announces a dataset
    starts the message as pynetdicom's decoder would (the dataset to a file, the file
    meta first), and its completion builds the request primitive through pynetdicom's
    own setters. A C-STORE-RSP that fits one PDU is written as bytes. Whatever the
    hand-written codec does not cover, and every message while a handler is bound to
    EVT_DIMSE_RECV/SENT (they expect pynetdicom's message objects), goes pynetdicom's way.
    """

    def receive_primitive(self, primitive: P_DATA) -> None:
        msg = self.message
        if msg is None:
            if self._start_store_request(primitive):
                return
        elif isinstance(msg.command_set, command_set.StoreCommand):
            if not any(data and data[0] & 1 for _cid, data in primitive.presentation_data_value_list):
                if msg.decode_msg(primitive, self.assoc):  # dataset fragments only
                    self._complete_store_request(msg)
                return
            # another command set before the dataset ended: pynetdicom's decoder goes on
            # from the same state, with the command as its own dataset
            msg.command_set = msg.command_set.to_dataset()
        super().receive_primitive(primitive)

    def _start_store_request(self, primitive: P_DATA) -> bool:
        pdvs = primitive.presentation_data_value_list
        if len(pdvs) != 1 or not pynetdicom_config.STORE_RECV_CHUNKED_DATASET:
            return False
        context_id, data = pdvs[0]
        if not data or data[0] & 3 != 3 or self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            return False
        cx = self.assoc._accepted_cx.get(context_id)
        command = command_set.store_request(bytes(data[1:])) if cx is not None else None
        if command is None:
            return False
        msg = dimse_messages.DIMSEMessage()
        msg.__class__ = dimse_messages.C_STORE_RQ  # as pynetdicom's decoder, once the command is in
        msg.context_id, msg.command_set = context_id, command
        self.message = msg  # the node's file meta reads the command from here
        # as pynetdicom's decoder: the dataset goes to a file that starts with the file meta
        f = dimse_messages.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
        msg._data_set_file, msg._data_set_path = f, Path(f.name)
        f.write(b"\x00" * 128)
        f.write(b"DICM")
        dimse_messages.write_file_meta_info(f, dimse_messages.create_file_meta(
            sop_class_uid=UID(command.AffectedSOPClassUID), sop_instance_uid=UID(command.AffectedSOPInstanceUID),
            transfer_syntax=cx.transfer_syntax[0]))
        return True

    def _complete_store_request(self, msg) -> None:
        context_id = msg.context_id
        self.message = None
        try:
            request = msg.command_set.to_primitive()
        except Exception:  # as pynetdicom's message_to_primitive failing: the association ends
            log.error("received an invalid C-STORE request")
            discard = getattr(msg._data_set_file, "discard", None)
            if discard is not None:  # the node's spool file: nothing of it may stay
                discard()
            self.dul.event_queue.put("Evt19")
            return
        request.DataSet = msg.data_set
        request._context_id = context_id
        request._dataset_path = msg._data_set_path
        request._dataset_file = msg._data_set_file
        self.msg_queue.put((context_id, request))

    def send_msg(self, primitive, context_id: int) -> None:
        if (type(primitive) is C_STORE and primitive.MessageIDBeingRespondedTo is not None
                and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            encoded = command_set.store_response(primitive)
            limit = self.maximum_pdu_size
            if encoded is not None and (limit == 0 or len(encoded) <= limit - 6):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


class NodeAssociation(Association):
    """An association accepted by the node's listener (see the module docstring)."""

    def adopt(self, max_read: int, request_timeout: float | None = None) -> None:
        """Turn pynetdicom's freshly built acceptor objects into the node's.

        ``request_timeout``: how long the peer may take to send its A-ASSOCIATE-RQ (the
        ARTIM timer, PS3.8 §9.1.5). pynetdicom waits the ACSE timeout for it, in the DUL
        and in the association's thread, and the connection holds a slot of
        ``maximum_associations`` all that time; the ACSE timeout comes back once the
        request is in, for the rest of the negotiation and the release."""
        self.__class__ = NodeAssociation
        if request_timeout is not None:
            after = self.acse_timeout

            def restore(_event) -> None:
                self.acse_timeout = after

            self.acse_timeout = request_timeout  # pynetdicom's setter arms ARTIM with it too
            self.bind(evt.EVT_REQUESTED, restore)
        sock = self.dul.socket
        if type(sock) is AssociationSocket:
            sock.__class__ = NodeSocket
            sock.max_read = max(PDU_FLOOR, max_read)
            if type(self.dul) is DULServiceProvider:
                self.dul.__class__ = NodeDUL
                self.dul.attach_wakeup(sock)
        if type(self.dimse) is DIMSEServiceProvider:
            self.dimse.__class__ = NodeDIMSE

    def _serve_request(self, msg, context_id: int) -> None:
        # pynetdicom picks the service by the SOP class the command names: a C-STORE of
        # a class it has no storage service for (an unknown UID, one longer than 64
        # characters) would get no response and the association be aborted. The node's
        # handler answers it with a status (the class differs from its context's).
        if (isinstance(msg, C_STORE) and msg.is_valid_request and not self._sent_release
                and context_id in self._accepted_cx
                and not issubclass(uid_to_service_class(msg.AffectedSOPClassUID or ""), StorageServiceClass)):
            # as pynetdicom runs a service: C-CANCELs cleared, the reactor paused
            self.dimse.cancel_req = {}
            self._is_paused = True
            try:
                StorageServiceClass(self).SCP(msg, self._accepted_cx[context_id])
            finally:
                self._is_paused = False
                self.dimse.cancel_req = {}
            return
        super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        """pynetdicom 3's acceptor loop, waiting on the DIMSE queue where it slept 1 ms.

        The checks after the wait are pynetdicom's, in its order: the peer's release
        request, an abort, the DUL thread's end, the network timeout."""
        try:
            self._reactor()
        finally:
            if isinstance(self.dul, NodeDUL):
                self.dul.close_wakeup()

    def _reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            # pause protocol: a thread that calls send_*() clears the checkpoint and
            # waits for _is_paused before it takes messages off the queue itself
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=IDLE_WAIT)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, context_id)

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.info("association closed: network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return
