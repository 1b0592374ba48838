"""Training data from an ``mvi-node synth ct`` folder, cached as one .npz per patient.

Per exam: the arterial series named by the manifest (``recipes.ct_ap_resnet18``), the
truth lesion mask on its grid (``truth/<accession>/lesions.npy``, slice i =
InstanceNumber i + 1), reduced to the main tumour exactly as the engine reduces an ROI,
pre-processed by the same code the engine runs. Clinical factors are assembled like at
inference: age/sex from the header, MTD from the mask, labs from ``clinical/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from mvi_node.clinical import FileClinicalSource, header_factors
from mvi_node.recipes.ct_ap_resnet18 import preprocess as pp
from mvi_node.recipes.ct_ap_resnet18.recipe import FACTORS, ROLE, clinical_vector
from mvi_node.roi.model import largest_component

log = logging.getLogger(__name__)


@dataclass
class PatientCrops:
    patient_id: str
    label: int
    grey: np.ndarray  # (N, 256, 256) float16, 0..255
    clinical: np.ndarray  # (9,)
    vendor: str


def _arterial_files(root: Path, study: dict, uid: str) -> list[Path]:
    files = []
    for f in sorted((root / study["dicom_dir"]).rglob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            files.append(f)
    return files


def prepare_study(root: Path, study: dict, labs: FileClinicalSource) -> PatientCrops | None:
    uid = study.get("recipes", {}).get("ct_ap_resnet18", {}).get(ROLE)
    if not uid or "#" in uid or uid not in study.get("truth", {}).get("series", []):
        return None
    dsets = [pydicom.dcmread(f) for f in _arterial_files(root, study, uid)]
    dsets.sort(key=lambda d: int(d.InstanceNumber))
    truth = np.load(root / study["truth"]["dir"] / "lesions.npy")
    if truth.shape[0] != len(dsets):
        log.warning("study %s: truth has %d slices, series %d", uid, truth.shape[0], len(dsets))
        return None
    mask = largest_component(truth > 0)
    spacing = (float(dsets[0].PixelSpacing[0]), float(dsets[0].PixelSpacing[1]))
    volume = np.stack([pp.hu(d) for d in dsets])
    crops = pp.crops_from_volume(volume, mask, spacing)
    factors = FACTORS.values()
    factors.update(header_factors(dsets[0]), "header")
    factors.update({"mtd_mm": pp.max_diameter_mm(mask, spacing)}, "roi")
    factors.update(labs.lookup(study["accession_number"], study["patient_id"]) or {}, "source")
    return PatientCrops(study["patient_id"], int(bool(study["mvi"])), crops.grey.astype(np.float16),
                        clinical_vector(factors), study.get("vendor", ""))


def build_cache(data: Path, cache: Path) -> list[Path]:
    """One ``<patient>.npz`` per usable exam (reused when present)."""
    data, cache = Path(data), Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    labs = FileClinicalSource(data / "clinical")
    out = []
    for study in manifest["studies"]:
        target = cache / f"{study['patient_id']}.npz"
        if not target.exists():
            p = prepare_study(data, study, labs)
            if p is None or len(p.grey) == 0:
                continue
            tmp = target.with_suffix(".tmp.npz")
            np.savez(tmp, grey=p.grey, clinical=p.clinical, label=p.label, patient_id=p.patient_id, vendor=p.vendor)
            tmp.rename(target)
        out.append(target)
    return out


def load_cache(files: list[Path]) -> list[PatientCrops]:
    out = []
    for f in files:
        z = np.load(f)
        out.append(PatientCrops(str(z["patient_id"]), int(z["label"]), z["grey"], z["clinical"], str(z["vendor"])))
    return out
