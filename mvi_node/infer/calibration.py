"""Applying a model's stored probability calibration when serving.

A manifest variant may carry ``[variants.NAME.calibration]``, fitted on a validation
cohort by ``mvi-node calibrate`` or the trainer (fitting lives in
:mod:`mvi_node.evaluation.calibration`, with scikit-learn); serving only applies it:

- ``method = "platt"``: ``p' = 1 / (1 + exp(-(a * logit(p) + b)))`` (``on_logit = true``,
  the default) or of ``p`` itself;
- ``method = "isotonic"``: piecewise-linear through the fitted ``x`` -> ``y`` points.

``fitted_on`` says on what, in words the SR repeats. The threshold in the manifest is
on the calibrated scale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    method: str
    params: Mapping[str, Any]
    fitted_on: str = ""

    @classmethod
    def from_manifest(cls, table: Mapping[str, Any] | None, where: str) -> "Calibration | None":
        if not table:
            return None
        method = str(table.get("method", ""))
        if method == "platt":
            if not all(isinstance(table.get(k), (int, float)) for k in ("a", "b")):
                raise ValueError(f"{where}: platt calibration needs numeric a and b")
        elif method == "isotonic":
            x, y = table.get("x"), table.get("y")
            if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) >= 2):
                raise ValueError(f"{where}: isotonic calibration needs lists x and y of equal length >= 2")
            if any(b < a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])):
                raise ValueError(f"{where}: isotonic calibration points must be non-decreasing")
        else:
            raise ValueError(f"{where}: unknown calibration method {method!r} (platt, isotonic)")
        params = {k: v for k, v in table.items() if k not in ("method", "fitted_on")}
        return cls(method, params, str(table.get("fitted_on", "")))

    def apply(self, p: float | np.ndarray) -> float | np.ndarray:
        q = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
        if self.method == "platt":
            x = np.log(q / (1 - q)) if self.params.get("on_logit", True) else q
            out = 1.0 / (1.0 + np.exp(-(float(self.params["a"]) * x + float(self.params["b"]))))
        else:
            out = np.interp(q, np.asarray(self.params["x"], float), np.asarray(self.params["y"], float))
        return float(out) if np.ndim(out) == 0 else out

    @property
    def digest(self) -> str:
        """Short content hash: a calibrated model is another algorithm for result UIDs."""
        blob = json.dumps({"method": self.method, **dict(self.params)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        what = {"platt": "Platt scaling", "isotonic": "isotonic regression"}[self.method]
        return f"{what}" + (f" on {self.fitted_on}" if self.fitted_on else "")
