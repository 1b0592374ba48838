import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from mvi_node.stage.file_meta import PREAMBLE, encode_file_meta


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45", "2.25.123456789012345678901234567890"])
@pytest.mark.parametrize("source_ae", [None, "PACS", "PACS1"])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_matches_pydicom_encoding(sop_uid, source_ae, ts):
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    expected = io.BytesIO()
    write_file_meta_info(expected, meta, enforce_standard=True)
    assert encode_file_meta(CTImageStorage, sop_uid, ts, source_ae) == PREAMBLE + expected.getvalue()
