"""Quantisation-aware distillation of seed 000's network: an int8 student that copies its fp32 teacher.

The accuracy check of ``mvi-node quantize`` (:mod:`mvi_node.infer.accuracy`) compares the
int8 copy with the fp32 graph the node serves today: calibrated probabilities within 0.02
and Grad-CAM maps at r >= 0.95. Fine-tuning on the labels (the plain ``--qat-from``) moves
the network away from that graph: it learned a new fp32 model (test AUC 0.946 -> 0.918)
and its int8 copy still missed the check (bench/RESULTS.md, 2026-12-02). Here the labels
are not used at all. The student starts as the teacher (the served graph rebuilt,
:func:`~mvi_node.recipes.ct_ap_resnet18.qat.from_onnx`), runs with int8 simulated
(:mod:`mvi_node.recipes.fake_quant`, ranges frozen where the quantiser will put them) and
is trained to give, slice by slice, the teacher's outputs:

- the probability as served (the teacher's Platt calibration applied; squared error, weighted
  so that the check's 0.02 weighs like a Grad-CAM r 0.05 short) and the logit difference it
  is a function of (squared error: keeps confident slices, where the probability is flat,
  from drifting);
- the Grad-CAM map, as the graph computes it before its per-slice min-max (1 - Pearson r,
  which min-max does not change), and before its ReLU (squared error per slice over the
  slice's variance: a nearly empty map is decided by where that sum crosses 0), and, where
  the teacher's map is empty, its largest pixel held below 0 (else the served map, stretched
  per slice, shows a spot where the teacher's shows nothing);
- the last block's features, scaled by their variance (keeps the rest from drifting).

Its float weights are then exported and quantised (``mvi-node quantize --int8-from``); the
node keeps serving the teacher's fp32 graph and its calibration, and the int8 copy is
checked against that graph (Hinton et al. 2015 for distillation; Mishra & Marr, ICLR 2018,
"Apprentice", for distilling into a low-precision student).
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mvi_node.infer.accuracy import CLASSIFICATION_TOLERANCES, correlation
from mvi_node.recipes.ct_ap_resnet18.batches import batch_inputs, epoch_slices, to_input
from mvi_node.recipes.ct_ap_resnet18.network import POSITIVE, MviResNet18, gradcam
from mvi_node.recipes.fake_quant import float_arithmetic
from mvi_node.recipes.gradcam import normalise_map

#: loss weights: served probability, Grad-CAM (1 - r and before the ReLU) and features
#: against the logit's squared error; 0.02 ** 2 * PROBABILITY_WEIGHT = 0.05
PROBABILITY_WEIGHT = 125.0
CAM_WEIGHT = 1.0
FEATURE_WEIGHT = 0.1
#: a teacher map with a spread under this share of the batch's largest is "flat" (see :func:`loss`)
MIN_CAM_SPREAD = 0.05
#: how far below 0 (in the slice's own spread) the student keeps an empty teacher map's largest pixel
EMPTY_MARGIN = 0.1
#: the terms :func:`loss` reports, in the epochs' history
LOSS_TERMS = ("logit", "probability", "cam", "cam_pre_relu", "cam_empty", "feature")
#: gradient norm clip: the straight-through rounding makes single steps spiky
MAX_GRAD_NORM = 1.0


def outputs(net: MviResNet18, image: torch.Tensor, clinical: torch.Tensor | None):
    """(features, logit difference, Grad-CAM before min-max at the graph's size, Grad-CAM
    before its ReLU at the features' size), as the exported graph computes them
    (``network.ExportWrapper``)."""
    feats = net.features(image)
    logits = net.head(feats, clinical)
    pre, cam = gradcam(net, feats)
    return feats, logits[:, POSITIVE] - logits[:, 1 - POSITIVE], cam[:, 0], pre


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample Pearson r of two (N, ...) maps."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def served(d: torch.Tensor, calibration: Any = None) -> torch.Tensor:
    """The probability the node shows for logit difference ``d``: softmax's sigmoid, then
    a Platt calibration on the logit when the model has one (an isotonic one is a
    piecewise-linear map of the same value; it is left out here, so the raw value stands in)."""
    params = getattr(calibration, "params", {}) if getattr(calibration, "method", "") == "platt" else {}
    if params and params.get("on_logit", True):
        return torch.sigmoid(float(params["a"]) * d + float(params["b"]))
    return torch.sigmoid(d)


def loss(student_out, teacher_out, calibration: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
    fs, ds, cs, ps = student_out
    ft, dt, ct, pt = teacher_out
    logit = F.mse_loss(ds, dt)
    prob = F.mse_loss(served(ds, calibration), served(dt, calibration))
    # a slice whose teacher map is (nearly) flat has no shape to copy, and r's gradient there
    # grows as 1 / its spread: such slices are left to the logit and feature terms
    spread = ct.flatten(1).std(1)
    shaped = spread > MIN_CAM_SPREAD * spread.max().clamp(min=1e-12)
    cam = (1.0 - pearson(cs[shaped], ct[shaped])).sum() / max(len(ct), 1) if bool(shaped.any()) else ds.sum() * 0
    # before the ReLU, every slice has a shape, the nearly empty maps too: where it crosses 0
    # decides what their min-max-stretched map shows; error as a share of each slice's variance
    pre = (((ps - pt) ** 2).flatten(1).mean(1) / pt.flatten(1).var(1).detach().clamp(min=1e-12)).mean()
    # the teacher's map is empty (nothing above 0): the served map is flat, and a student
    # map with any pixel above 0 is stretched to a full-scale spot, which the check counts as
    # r = 0; so the student's largest pixel is held a margin below 0 there
    empty = pt.flatten(1).amax(1) <= 0
    if bool(empty.any()):
        scale = pt[empty].flatten(1).std(1).detach().clamp(min=1e-12)
        flat = (F.relu(ps[empty].flatten(1).amax(1) + EMPTY_MARGIN * scale) / scale).sum() / len(pt)
    else:
        flat = ds.sum() * 0
    feat = F.mse_loss(fs, ft) / ft.var().detach().clamp(min=1e-8)
    total = logit + PROBABILITY_WEIGHT * prob + CAM_WEIGHT * (cam + pre + flat) + FEATURE_WEIGHT * feat
    return total, {"logit": float(logit.detach()), "probability": float(prob.detach()), "cam": float(cam.detach()),
                   "cam_pre_relu": float(pre.detach()), "cam_empty": float(flat.detach()),
                   "feature": float(feat.detach())}


@torch.no_grad()
def agreement(student: MviResNet18, teacher: MviResNet18, patients, batch: int = 16,
              calibration: Any = None, student_float: bool = False) -> dict[str, float]:
    """How close the simulated int8 student is to the teacher on ``patients``' slices, in
    the check's own terms: the largest difference of the patient score (max over slices of
    the served probability) and the mean Grad-CAM r over slices. ``student_float``: the
    student in plain float arithmetic (:func:`~mvi_node.recipes.fake_quant.float_arithmetic`);
    ``teacher`` may be the same network, which then runs simulated int8 against its own fp32."""
    student.eval(), teacher.eval()
    deltas, rs = [], []
    for p in patients:
        ps, pt = [], []
        for i in range(0, len(p.grey), batch):
            x = to_input(p.grey[i:i + batch])
            c = torch.as_tensor(p.clinical[None].repeat(len(x), 0)) if student.clinical else None
            with float_arithmetic(student) if student_float else contextlib.nullcontext():
                _, ds, cs, _ = outputs(student, x, c)
            _, dt, ct, _ = outputs(teacher, x, c)
            ps.append(served(ds, calibration)), pt.append(served(dt, calibration))
            # the check's own r, on the maps as served (min-max per slice; two flat maps agree)
            rs += [correlation(a, b) for a, b in zip(normalise_map(cs).numpy(), normalise_map(ct).numpy())]
        deltas.append(abs(float(torch.cat(ps).max()) - float(torch.cat(pt).max())))
    return {"probability_delta_max": round(max(deltas, default=0.0), 4),
            "probability_delta_median": round(float(np.median(deltas)) if deltas else 0.0, 4),
            "gradcam_r_mean": round(float(np.mean(rs)) if rs else 1.0, 4)}


def _badness(a: dict[str, float]) -> float:
    # both check criteria as a share of their tolerance (0.02, 1 - 0.95); the worse one counts
    tol = CLASSIFICATION_TOLERANCES
    return max(a["probability_delta_max"] / tol["probability"], (1.0 - a["gradcam_r_mean"]) / (1.0 - tol["gradcam"]))


def _scores(student: MviResNet18, teacher: MviResNet18, val, calibration: Any, self_consistent: float):
    """The epoch's figures: with ``self_consistent``, the check as the quantiser will run it
    (the student's int8 against its own fp32) and how far its fp32 drifted from the teacher;
    else the simulated int8 student against the teacher."""
    if not self_consistent:
        return agreement(student, teacher, val, calibration=calibration), {}
    return (agreement(student, student, val, calibration=calibration, student_float=True),
            {f"drift_{k}": v for k, v in agreement(student, teacher, val, calibration=calibration,
                                                    student_float=True).items()})


def distil(student: MviResNet18, teacher: MviResNet18, train, val, cfg, epochs: int, augment,
           log: Callable[[str], None] = print, deadline: float | None = None,
           progress: Callable[[dict], None] | None = None, calibration: Any = None):
    """SGD on :func:`loss`; the epoch whose :func:`agreement` on ``val`` is best is kept.
    ``calibration``: the teacher variant's (:class:`~mvi_node.infer.calibration.Calibration`).

    ``cfg.self_consistent`` (a weight w > 0): the student becomes a new model whose own fp32
    graph is served and checked against its int8 copy. Each step runs it twice, in float and
    with int8 simulated, on the same weights; the float outputs copy the teacher (so the new
    fp32 model stays the validated one) and the int8 outputs copy the float ones, with w,
    gradients flowing into both: the weights move to where rounding changes the outputs
    least, not only to where the rounded network imitates the teacher. The epoch kept is the
    one whose int8-against-own-fp32 agreement is best. Returns (student, history)."""
    w = float(getattr(cfg, "self_consistent", 0.0) or 0.0)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                          momentum=cfg.momentum)
    start, drift = _scores(student, teacher, val, calibration, w)
    log(f"before distillation: {start} {drift}")
    best, best_bad, history, steps = copy.deepcopy(student.state_dict()), _badness(start), [], 0
    terms = LOSS_TERMS + (tuple(f"self_{k}" for k in LOSS_TERMS) if w else ())
    for epoch in range(epochs):
        items = epoch_slices(train, cfg.slices_per_patient, (cfg.seed, 100 + epoch))
        student.train()
        t0, totals, n = time.perf_counter(), dict.fromkeys(terms, 0.0), 0
        for i in range(0, len(items), cfg.batch):
            chunk = items[i:i + cfg.batch]
            x, c = batch_inputs(chunk, augment, student.clinical)
            with torch.no_grad():
                target = outputs(teacher, x, c)
            opt.zero_grad()
            if w:
                with float_arithmetic(student):
                    as_float = outputs(student, x, c)
                total, parts = loss(as_float, target, calibration)
                own, own_parts = loss(outputs(student, x, c), as_float, calibration)
                total = total + w * own
                parts.update({f"self_{k}": v for k, v in own_parts.items()})
            else:
                total, parts = loss(outputs(student, x, c), target, calibration)
            total.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), MAX_GRAD_NORM)
            opt.step()
            for k, v in parts.items():
                totals[k] += v * len(chunk)
            n += len(chunk)
            steps += 1
            if cfg.max_steps and steps >= cfg.max_steps:
                break
            if deadline and time.time() > deadline:
                break
        got, drift = _scores(student, teacher, val, calibration, w)
        history.append({"epoch": epoch + 1, **{k: round(v / max(n, 1), 5) for k, v in totals.items()},
                        **{f"val_{k}": v for k, v in got.items()}, **{f"val_{k}": v for k, v in drift.items()},
                        "seconds": round(time.perf_counter() - t0, 1)})
        log(f"distillation epoch {epoch + 1}: {history[-1]}")
        if progress is not None:
            progress(history[-1])
        if _badness(got) < best_bad:
            best, best_bad = copy.deepcopy(student.state_dict()), _badness(got)
        if (cfg.max_steps and steps >= cfg.max_steps) or (deadline and time.time() > deadline):
            break
    student.load_state_dict(best)
    return student, history
