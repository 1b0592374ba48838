"""Model folders: ``manifest.toml`` beside one file per variant, checked at start.

A variant is an ONNX graph, or for a classical model (SVM, Gaussian process) that
skl2onnx cannot convert, a ``.npz`` of documented arrays, read with
``allow_pickle=False``: nothing in a model folder is ever unpickled.

A model folder is ``<root>/<recipe>/<version>/``. The manifest says what the graph is
(recipe, version, per-variant file, sha256, input/output names and shapes), how inputs
are made (preprocessing constants), how to decide (threshold), how good it is (metrics),
what it learnt from (training data) and what it is for (intended use). A manifest that
does not match its ONNX file is refused with :class:`ManifestError`, before any job runs.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvi_node.infer.calibration import Calibration

REQUIRED = ("recipe", "version", "intended_use", "training_data", "variants")
VARIANT_REQUIRED = ("file", "sha256", "threshold", "inputs", "outputs")
ARRAYS_REQUIRED = ("file", "sha256", "threshold")
PRECISION_REQUIRED = ("file", "sha256", "check")
#: the numeric precisions a graph may be served in; fp32 is the variant's own file
PRECISIONS = ("fp32", "int8", "fp16", "bf16")


class ManifestError(ValueError):
    """A model folder that must not be served; the message says which and why."""


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Precision:
    """A reduced-precision copy of a variant's graph (same inputs and outputs) and the
    accuracy check that decides whether it may be served (``check.passed``)."""

    name: str
    path: Path
    sha256: str
    check: dict[str, Any]
    info: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.check.get("passed") is True


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    sha256: str
    threshold: float
    inputs: dict[str, list]  # name -> shape (str for symbolic axes)
    outputs: dict[str, list]
    metrics: dict[str, Any]
    #: probability calibration applied when serving (None: the graph's own probabilities)
    calibration: Calibration | None = None
    #: quantised / reduced-precision copies of this graph (``[variants.X.precisions.P]``)
    precisions: dict[str, "Precision"] = field(default_factory=dict)

    def file_for(self, precision: str) -> tuple[Path, str]:
        """(path, sha256) of the graph served in ``precision`` ("fp32": the variant's own)."""
        if precision == "fp32":
            return self.path, self.sha256
        p = self.precisions[precision]
        return p.path, p.sha256

    @property
    def needs_clinical(self) -> bool:
        return "clinical" in self.inputs

    @property
    def kind(self) -> str:
        return "arrays" if self.path.suffix == ".npz" else "onnx"

    def arrays(self) -> dict[str, Any]:
        """A classical model's parameters; object arrays (pickles) are refused."""
        import numpy as np

        if self.kind != "arrays":
            raise ManifestError(f"{self.path}: variant {self.name} is an ONNX graph, not arrays")
        with np.load(self.path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


@dataclass(frozen=True)
class ModelInfo:
    recipe: str
    version: str
    folder: Path
    intended_use: str
    training_data: str
    variants: dict[str, Variant]
    raw: dict[str, Any]

    def identity(self, variant: str, precision: str = "fp32") -> dict[str, Any]:
        """What every output carries: which model made it and what it is for; ``sha256``
        is the graph that ran (the ``precision`` copy when not fp32)."""
        v = self.variants[variant]
        _path, digest = v.file_for(precision)
        ident = {"recipe": self.recipe, "model_version": self.version, "variant": variant,
                 "sha256": digest, "precision": precision, "intended_use": self.intended_use,
                 "training_data": self.training_data}
        if v.calibration is not None:
            ident["calibration"] = v.calibration.describe()
            ident["calibration_digest"] = v.calibration.digest
        return ident


def _shape(value: Any) -> list:
    return [d if isinstance(d, int) else str(d) for d in value]


def _io(entries: Any, where: str) -> dict[str, list]:
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{where}: expected a non-empty list of {{name, shape}}")
    out = {}
    for e in entries:
        if "name" not in e or "shape" not in e:
            raise ManifestError(f"{where}: each entry needs name and shape")
        out[str(e["name"])] = _shape(e["shape"])
    return out


def _graph_io(path: Path) -> tuple[dict[str, list], dict[str, list]]:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any load failure refuses the model
        raise ManifestError(f"{path}: not a loadable ONNX graph ({type(exc).__name__})") from exc
    return ({i.name: _shape(i.shape) for i in sess.get_inputs()},
            {o.name: _shape(o.shape) for o in sess.get_outputs()})


def _same_shape(declared: list, actual: list) -> bool:
    if len(declared) != len(actual):
        return False
    return all(isinstance(d, str) and isinstance(a, str) or d == a for d, a in zip(declared, actual))


def load_model(folder: Path | str, check_graph: bool = True) -> ModelInfo:
    """Read and verify one model folder; raise :class:`ManifestError` when anything is off."""
    folder = Path(folder)
    mpath = folder / "manifest.toml"
    try:
        raw = tomllib.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{mpath}: unreadable manifest ({exc})") from exc
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ManifestError(f"{mpath}: missing keys {missing}")
    variants = {}
    for name, v in raw["variants"].items():
        where = f"{mpath} [variants.{name}]"
        arrays = str(v.get("file", "")).endswith(".npz")
        miss = [k for k in (ARRAYS_REQUIRED if arrays else VARIANT_REQUIRED) if k not in v]
        if miss:
            raise ManifestError(f"{where}: missing keys {miss}")
        path = folder / v["file"]
        if not path.is_file():
            raise ManifestError(f"{where}: file {v['file']} not found")
        digest = sha256_file(path)
        if digest != v["sha256"]:
            raise ManifestError(f"{where}: sha256 of {v['file']} is {digest}, manifest says {v['sha256']}")
        if arrays:
            inputs = _io(v["inputs"], where + " inputs") if v.get("inputs") else {}
            outputs = _io(v["outputs"], where + " outputs") if v.get("outputs") else {}
            _check_arrays(path, where)
        else:
            inputs, outputs = _io(v["inputs"], where + " inputs"), _io(v["outputs"], where + " outputs")
        if check_graph and not arrays:
            g_in, g_out = _graph_io(path)
            for label, declared, actual in (("inputs", inputs, g_in), ("outputs", outputs, g_out)):
                if set(declared) != set(actual):
                    raise ManifestError(f"{where}: {label} {sorted(declared)} but the graph has {sorted(actual)}")
                for n, shape in declared.items():
                    if not _same_shape(shape, actual[n]):
                        raise ManifestError(f"{where}: {label} {n} declared {shape}, graph has {actual[n]}")
        try:
            calibration = Calibration.from_manifest(v.get("calibration"), where)
        except ValueError as exc:
            raise ManifestError(str(exc)) from exc
        precisions = _precisions(folder, where, v.get("precisions", {}), inputs, outputs,
                                 check_graph and not arrays)
        variants[name] = Variant(name, path, digest, float(v["threshold"]), inputs, outputs, dict(v.get("metrics", {})),
                                 calibration, precisions)
    return ModelInfo(str(raw["recipe"]), str(raw["version"]), folder, str(raw["intended_use"]),
                     str(raw["training_data"]), variants, raw)


def _precisions(folder: Path, where: str, tables: dict[str, Any], inputs: dict[str, list],
                outputs: dict[str, list], check_graph: bool) -> dict[str, Precision]:
    """``[variants.X.precisions.P]``: each file verified like the variant's own (sha256,
    and the same input and output names and ranks: a quantised graph is a drop-in)."""
    out = {}
    for name, t in tables.items():
        at = f"{where} precision {name}"
        if name not in PRECISIONS or name == "fp32":
            raise ManifestError(f"{at}: precision must be one of {list(PRECISIONS[1:])}")
        miss = [k for k in PRECISION_REQUIRED if k not in t]
        if miss:
            raise ManifestError(f"{at}: missing keys {miss}")
        path = folder / t["file"]
        if not path.is_file():
            raise ManifestError(f"{at}: file {t['file']} not found")
        digest = sha256_file(path)
        if digest != t["sha256"]:
            raise ManifestError(f"{at}: sha256 of {t['file']} is {digest}, manifest says {t['sha256']}")
        if check_graph:
            g_in, g_out = _graph_io(path)
            for label, declared, actual in (("inputs", inputs, g_in), ("outputs", outputs, g_out)):
                if set(declared) != set(actual) or any(len(declared[n]) != len(actual[n]) for n in declared):
                    raise ManifestError(f"{at}: {label} {sorted(actual)} differ from the fp32 graph's {sorted(declared)}")
        info = {k: v for k, v in t.items() if k not in ("file", "sha256", "check")}
        out[name] = Precision(name, path, digest, dict(t["check"]), info)
    return out


def _check_arrays(path: Path, where: str) -> None:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                data[key]
    except (ValueError, OSError) as exc:  # object arrays need pickle: refused
        raise ManifestError(f"{where}: {path.name} is not a plain-array .npz ({exc})") from exc


def variant_entry(path: Path, threshold: float, metrics: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Manifest table of one exported graph, read from the graph itself."""
    g_in, g_out = _graph_io(path)
    return {"file": str(path.relative_to(folder)), "sha256": sha256_file(path), "threshold": float(threshold),
            "inputs": [{"name": n, "shape": s, "dtype": "float32"} for n, s in g_in.items()],
            "outputs": [{"name": n, "shape": s, "dtype": "float32"} for n, s in g_out.items()],
            "metrics": metrics}
