"""C-STORE result files to one destination (pynetdicom SCU)."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from mvi_node.common.scu import reactor_paused
from mvi_node.config.destination import Destination

log = logging.getLogger("mvi_node.dispatch")

# PS3.4 B.2.3: 0xB000 coercion, 0xB007 data set does not match, 0xB006 elements discarded
_OK = {0x0000, 0xB000, 0xB006, 0xB007}


class DispatchError(RuntimeError):
    """The destination did not take every file; the message says why (no patient data)."""


@dataclass(frozen=True)
class SendReport:
    sent: list[str]  # SOP Instance UIDs acknowledged
    warnings: int


def _timeouts(ae: AE, seconds: float) -> AE:
    """Every wait of an outgoing association bounded: TCP connect, ACSE, DIMSE, network."""
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = seconds
    return ae


def _ae(calling_ae: str, sop_classes: set[str], timeout: float) -> AE:
    ae = _timeouts(AE(ae_title=calling_ae), timeout)
    for uid in sorted(sop_classes):
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def _tls_args(dest: Destination, tls_context: ssl.SSLContext | None):
    if not dest.tls:
        return None
    ctx = tls_context or ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    return (ctx, dest.host)


def send_files(
    dest: Destination, files: list[Path], calling_ae: str = "MVI_NODE", tls_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> SendReport:
    """Send ``files`` on one association; raise :class:`DispatchError` unless all succeed."""
    datasets = [dcmread(f) for f in files]
    ae = _ae(calling_ae, {str(ds.SOPClassUID) for ds in datasets}, timeout)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=_tls_args(dest, tls_context))
    if not assoc.is_established:
        reason = ("association rejected" if assoc.is_rejected
                  else f"no association (peer down, unreachable or silent for {timeout:g} s)")
        raise DispatchError(f"{dest}: {reason}")
    sent: list[str] = []
    warnings = 0
    try:
        for ds in datasets:
            with reactor_paused(assoc):
                status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise DispatchError(f"{dest}: no response to C-STORE of {ds.SOPInstanceUID} (association lost)")
            if code not in _OK:
                raise DispatchError(f"{dest}: C-STORE of {ds.SOPInstanceUID} answered 0x{code:04X}")
            warnings += code != 0
            sent.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return SendReport(sent, warnings)


def echo(dest: Destination, calling_ae: str = "MVI_NODE", tls_context: ssl.SSLContext | None = None,
         timeout: float = 5.0) -> bool:
    """C-ECHO the destination (readiness): ``False`` within ``timeout`` when it does not answer."""
    ae = _timeouts(AE(ae_title=calling_ae), timeout)
    ae.add_requested_context(Verification)
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=_tls_args(dest, tls_context))
    if not assoc.is_established:
        return False
    try:
        with reactor_paused(assoc):
            status = assoc.send_c_echo()
        return getattr(status, "Status", None) == 0x0000
    finally:
        assoc.release()
