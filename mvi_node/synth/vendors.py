"""Scanner vendor habits: how GE, Siemens, Philips and Canon name and tag series.

A phase selector trained on one vendor's naming fails on another's; these profiles
put the real-world variety (naming style, language, pixel storage, contrast-agent
tag habits, MR sequence names and options) into the synthetic data on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

# Phase words as technologists type them, per language. "{t}" = slice thickness.
PHASE_WORDS: dict[str, dict[str, str]] = {
    "en": {"native": "Non-contrast", "early_arterial": "Early arterial", "arterial": "Arterial",
           "portal": "Portal venous", "delayed": "Delayed", "pre": "pre", "transitional": "delayed 3min",
           "hepatobiliary": "HBP 20min", "coronal": "Coronal", "mip": "MIP", "dynamic": "dynamic"},
    "de": {"native": "Nativ", "early_arterial": "früharteriell", "arterial": "arteriell",
           "portal": "portalvenös", "delayed": "Spätphase", "pre": "nativ", "transitional": "Spätphase 3min",
           "hepatobiliary": "hepatobiliär 20min", "coronal": "koronar",
           "mip": "MIP", "dynamic": "dynamisch"},
    "es": {"native": "Sin contraste", "early_arterial": "Arterial precoz", "arterial": "Arterial",
           "portal": "Portal", "delayed": "Tardía", "pre": "simple", "transitional": "tardía 3min",
           "hepatobiliary": "hepatobiliar 20min", "coronal": "Coronal", "mip": "MIP", "dynamic": "dinámico"},
    "zh": {"native": "平扫", "early_arterial": "动脉早期", "arterial": "动脉期", "portal": "门脉期",
           "delayed": "延迟期", "pre": "平扫", "transitional": "延迟期3min", "hepatobiliary": "肝胆期20min",
           "coronal": "冠状位", "mip": "MIP", "dynamic": "动态增强"},
}

OPAQUE_CT = ("Series {n}", "Recon {k}", "Abdomen {t}", "C+ {t}mm", "Body {t}.0")
OPAQUE_MR = ("3D GRE +C", "Series {n}", "Recon {k}", "Ax 3D T1 +C")


@dataclass(frozen=True)
class Vendor:
    key: str
    manufacturer: str
    ct_model: str
    mr_model: dict[float, str]
    software: str
    ct_signed: bool
    ct_bits_stored: int
    ct_intercept: int
    ct_agent: str
    ct_image_type: tuple[str, ...]
    ct_scout: str
    ct_monitor: str
    ct_dose: str
    dose_series_number: int
    mr_dyn_seq: str  # SequenceName of the 3D T1 GRE
    mr_dyn_variant: str
    mr_dyn_options: str
    mr_image_type: tuple[str, ...]
    mr_agent: dict[str, str]

    def ct_name(self, key: str, lang: str, t: float, kind: str = "axial") -> str:
        """SeriesDescription of a CT series (``key`` a PHASE_WORDS key)."""
        w = PHASE_WORDS[lang].get(key, key)
        if self.key == "ge" and lang == "en":
            w = {"Delayed": "Delay 3 min", "Portal venous": "Portal Venous"}.get(w, w)
        if self.key == "siemens" and lang == "en":
            w = {"Portal venous": "PV", "Non-contrast": "Abdomen nativ"}.get(w, w)
        ts = f"{t:.1f}" if self.key in ("siemens", "canon") else f"{t:g}"
        if kind == "coronal":
            ts_c = {"ge": f"{PHASE_WORDS[lang]['coronal']} {w} {ts}mm", "siemens": f"Cor {w} {ts} MPR",
                    "philips": f"COR {w} MPR", "canon": f"Cor {ts} MPR {w}"}
            return ts_c[self.key]
        if kind == "mip":
            return {"ge": f"{w} MIP {ts}mm", "siemens": f"MIP {w} {ts}", "philips": f"MIP {w}",
                    "canon": f"MIP {ts} {w}"}[self.key]
        if kind == "thick":
            return {"ge": f"{w} {ts}mm AVG", "siemens": f"{w} {ts} Br40 AVG", "philips": f"{w} {ts}mm Avg",
                    "canon": f"{ts} FC08 {w} AVG"}[self.key]
        return {"ge": f"{w} {ts}mm", "siemens": f"{w}  {ts}  Br40  3", "philips": f"{w} {ts}mm iDose",
                "canon": f"{ts} FC08 {w}"}[self.key]

    def mr_name(self, key: str, lang: str) -> str:
        """SeriesDescription of an MR series."""
        w = PHASE_WORDS[lang].get(key, key)
        if key in ("pre", "early_arterial", "arterial", "portal", "transitional", "hepatobiliary", "dynamic"):
            short = {"pre": "pre", "early_arterial": "art1", "arterial": "art", "portal": "pv",
                     "transitional": "delay", "hepatobiliary": "hbp_20min", "dynamic": "dyn"}[key]
            if lang != "en":
                short = w
            return {"siemens": f"t1_vibe_fs_tra_bh_{short}", "ge": f"Ax LAVA-Flex {w}",
                    "philips": f"T1W_mDIXON_{short}", "canon": f"Quick3D {w}"}[self.key]
        fixed = {
            "t2": {"siemens": "t2_haste_fs_tra_mbh", "ge": "Ax T2 FRFSE FS", "philips": "T2W_SPAIR",
                   "canon": "FASE T2 FS"},
            "dwi": {"siemens": "ep2d_diff_b50_400_800_tra", "ge": "Ax DWI b50-400-800",
                    "philips": "DWI_b50_400_800", "canon": "DWI b{b}"},
            "adc": {"siemens": "ep2d_diff_b50_400_800_tra_ADC", "ge": "Apparent Diffusion Coefficient (mm2/s)",
                    "philips": "dADC", "canon": "ADC"},
            "inopp": {"siemens": "t1_fl2d_opp-in_tra", "ge": "Ax Dual Echo", "philips": "T1W_IP_OP",
                      "canon": "FFE2D In/Out"},
            "localizer": {"siemens": "localizer", "ge": "3-Plane Loc", "philips": "Survey",
                          "canon": "Locator"},
            "coronal": {"siemens": "t1_vibe_fs_cor_hbp", "ge": "Cor LAVA-Flex", "philips": "T1W_THRIVE_COR",
                        "canon": "Quick3D COR"},
        }
        return fixed[key][self.key]

    def mr_dixon_name(self, kind: str) -> str:
        """SeriesDescription of a 3D T1 Dixon reconstruction (kind water/fat/opp/in)."""
        if self.key == "ge":  # GE prefixes the reconstruction: "WATER: Ax LAVA-Flex"
            return {"water": "WATER", "fat": "FAT", "opp": "OutPhase", "in": "InPhase"}[kind] + ": Ax LAVA-Flex"
        short = {"water": "W", "fat": "F", "opp": "opp", "in": "in"}[kind]
        if self.key == "siemens":
            return f"t1_vibe_dixon_tra_bh_{short}"
        short = {"opp": "OP", "in": "IP"}.get(kind, short)
        return f"T1W_mDIXON_{short}" if self.key == "philips" else f"Quick3D WFS {short}"


VENDOR_PROFILES: dict[str, Vendor] = {
    "ge": Vendor(
        key="ge", manufacturer="GE MEDICAL SYSTEMS", ct_model="Revolution CT",
        mr_model={1.5: "SIGNA Artist", 3.0: "SIGNA Premier"}, software="synth_ge_27",
        ct_signed=True, ct_bits_stored=16, ct_intercept=-1024, ct_agent="OMNIPAQUE 350",
        ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL"), ct_scout="Scout", ct_monitor="SmartPrep",
        ct_dose="Dose Report", dose_series_number=999,
        mr_dyn_seq="LAVA", mr_dyn_variant="SS\\SK", mr_dyn_options="FAST_GEMS\\EDR_GEMS\\ACC_GEMS\\FS",
        mr_image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        mr_agent={"gd-eob": "EOVIST", "extracellular": "GADAVIST"},
    ),
    "siemens": Vendor(
        key="siemens", manufacturer="SIEMENS", ct_model="SOMATOM Force",
        mr_model={1.5: "MAGNETOM Aera", 3.0: "MAGNETOM Vida"}, software="syngo CT VB20",
        ct_signed=False, ct_bits_stored=12, ct_intercept=-1024, ct_agent="APPLIED",
        ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"), ct_scout="Topogram  0.6  T20s",
        ct_monitor="Monitoring", ct_dose="Patient Protocol", dose_series_number=501,
        mr_dyn_seq="*fl3d1", mr_dyn_variant="SP\\OSP", mr_dyn_options="PFP\\FS",
        mr_image_type=("ORIGINAL", "PRIMARY", "M", "ND", "NORM"),
        mr_agent={"gd-eob": "Primovist", "extracellular": "Dotarem"},
    ),
    "philips": Vendor(
        key="philips", manufacturer="Philips", ct_model="IQon - Spectral CT",
        mr_model={1.5: "Ingenia", 3.0: "Ingenia Elition X"}, software="5.7.1",
        ct_signed=False, ct_bits_stored=12, ct_intercept=-1000, ct_agent="Ultravist 370",
        ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL"), ct_scout="Surview", ct_monitor="Bolus Tracking",
        ct_dose="Dose Info", dose_series_number=1001,
        mr_dyn_seq="mDIXON", mr_dyn_variant="SK", mr_dyn_options="FS",
        mr_image_type=("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
        mr_agent={"gd-eob": "Primovist", "extracellular": "Gadovist"},
    ),
    "canon": Vendor(
        key="canon", manufacturer="CANON_MEC", ct_model="Aquilion ONE",
        mr_model={1.5: "Vantage Orian", 3.0: "Vantage Galan 3T"}, software="V10.2",
        ct_signed=True, ct_bits_stored=16, ct_intercept=0, ct_agent="C+",
        ct_image_type=("ORIGINAL", "PRIMARY", "AXIAL"), ct_scout="Scanogram", ct_monitor="SureStart",
        ct_dose="Dose Info", dose_series_number=9000,
        mr_dyn_seq="Quick 3D", mr_dyn_variant="SP", mr_dyn_options="FS",
        mr_image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        mr_agent={"gd-eob": "Gd-EOB-DTPA", "extracellular": "gadoterate meglumine"},
    ),
}


def opaque_name(modality: str, style: int, n: int, k: int, t: float) -> str:
    """A description that says nothing about the phase; one ``style`` per exam."""
    pool = OPAQUE_CT if modality == "ct" else OPAQUE_MR
    return pool[style % len(pool)].format(n=n, k=k, t=f"{t:g}")


# ImageType of 3D T1 Dixon reconstructions: Siemens and GE say which map it is; the
# Philips and Canon profiles keep plain magnitude types, so that only the echo times and
# the description tell (a selector must cope with both).
DIXON_IMAGE_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "siemens": {"water": ("ORIGINAL", "PRIMARY", "DIXON", "W"), "fat": ("ORIGINAL", "PRIMARY", "DIXON", "F"),
                "opp": ("ORIGINAL", "PRIMARY", "DIXON", "OPP_PHASE"), "in": ("ORIGINAL", "PRIMARY", "DIXON", "IN_PHASE")},
    "ge": {"water": ("DERIVED", "PRIMARY", "WATER"), "fat": ("DERIVED", "PRIMARY", "FAT"),
           "opp": ("DERIVED", "PRIMARY", "OUT PHASE"), "in": ("DERIVED", "PRIMARY", "IN PHASE")},
    "philips": {k: ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE") for k in ("water", "fat", "opp", "in")},
    "canon": {k: ("ORIGINAL", "PRIMARY", "OTHER") for k in ("water", "fat", "opp", "in")},
}
# Inline subtraction (post minus pre): Philips keeps a plain derived type (its description says SUB).
SUBTRACTION_IMAGE_TYPES: dict[str, tuple[str, ...]] = {
    "siemens": ("DERIVED", "PRIMARY", "SUBTRACTION"), "ge": ("DERIVED", "SECONDARY", "SUBTRACT"),
    "philips": ("DERIVED", "SECONDARY", "OTHER"), "canon": ("DERIVED", "SECONDARY", "SUB"),
}
