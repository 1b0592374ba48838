"""Training of seed 001 (Sun et al. 2022) on the crops the serving path prepared: torch.

A sample is one patient and one of its 27 slice combinations (one of the three slices
of each sequence); each epoch draws ``combinations_per_patient`` of them per patient
(CPU budget). Progressive resizing for the same budget: all but the last
``full_size_epochs`` epochs see the crops at ``train_size`` (the branches are fully
convolutional with global pooling), the last ones at the served 320 x 320, and
validation always scores at 320, so the epoch kept is the best as served. Augmentation (training only, the same for the three sequences of a
sample): rotation +-10 deg, scale 0.9-1.1, horizontal flip p=0.5, grey gain 0.9-1.1.
AdamW (lr 1e-3, weight decay 1e-4, cosine decay), cross-entropy over M0/M1/M2.
Validation scores a patient as served: class probabilities averaged over all 27
combinations, P(MVI) = P(M1) + P(M2); the best epoch by validation AUC is kept; the
threshold is Youden's J on validation. The paper does not state its optimiser; from
scratch on a few hundred synthetic patients AdamW converged where SGD did not in the
time this CPU allows.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mvi_node import evaluation as ev
from mvi_node.recipes.mr_3seq_grade.data import PatientInputs
from mvi_node.recipes.mr_3seq_grade.network import SIZE, SLICES, ExportModule, ThreeSequenceNet


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 12
    combinations_per_patient: int = 1
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    train_size: int = 160
    full_size_epochs: int = 2
    max_minutes: float | None = None
    max_steps: int | None = None  # tests: a few steps only
    threads: int = 0


@dataclass
class Trained:
    net: ThreeSequenceNet
    threshold: float
    validation: dict
    history: list[dict] = field(default_factory=list)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, 3 sequences, 320, 320) -> the same random affine + flip + gain per sample."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(b, generator=gen) * 0.2
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros(b)], 1),
                         torch.stack([sin * flip, cos, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out * (0.9 + torch.rand(b, 1, 1, 1, generator=gen) * 0.2)


def _inputs(grey: np.ndarray) -> list[torch.Tensor]:
    """(P, 3 seq, 3 slices, H, W) grey -> per sequence (P, 3, H, W) in 0..1."""
    x = torch.as_tensor(np.asarray(grey, np.float32) / 255.0)
    return [x[:, s] for s in range(x.shape[1])]


@torch.no_grad()
def patient_probabilities(net: ThreeSequenceNet, patients: list[PatientInputs], batch: int = 2) -> np.ndarray:
    """(P, 3) class probabilities as served (mean over the 27 combinations)."""
    module = ExportModule(net).eval()
    out = []
    for i in range(0, len(patients), batch):
        grey = np.stack([p.grey for p in patients[i:i + batch]])
        out.append(module(*_inputs(grey))[0].numpy())
    return np.concatenate(out) if out else np.zeros((0, 3))


@torch.no_grad()
def middle_probabilities(net: ThreeSequenceNet, patients: list[PatientInputs], size: int) -> np.ndarray:
    """(P, 3) from the middle slice of each sequence at ``size`` (a cheap training-time look)."""
    net.eval()
    out = []
    for i in range(0, len(patients), 8):
        x = torch.as_tensor(np.stack([p.grey[:, SLICES // 2] for p in patients[i:i + 8]]).astype(np.float32) / 255.0)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(torch.softmax(net(*[x[:, s:s + 1] for s in range(3)])[:, 0], 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3))


def fit(train: list[PatientInputs], val: list[PatientInputs], cfg: TrainConfig,
        log: Callable[[str], None] = print, progress: Callable[[dict], None] | None = None) -> Trained:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    net = ThreeSequenceNet().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) * cfg.combinations_per_patient / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps_per_epoch * cfg.epochs,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = np.array([p.mvi for p in val])
    deadline = time.time() + cfg.max_minutes * 60 if cfg.max_minutes else None
    # the budget's last quarter is kept for the full-size epochs
    low_deadline = time.time() + 0.75 * cfg.max_minutes * 60 if cfg.max_minutes else None
    best, best_auc, stale, history, steps, full_from = None, -1.0, 0, [], 0, cfg.epochs - cfg.full_size_epochs
    for epoch in range(cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        items = [(p, tuple(int(v) for v in rng.integers(0, SLICES, 3)))
                 for p in train for _ in range(cfg.combinations_per_patient)]
        items = [items[i] for i in rng.permutation(len(items))]
        net.train()
        if low_deadline and time.time() > low_deadline and epoch < full_from:
            log("low-resolution budget reached: on to the full-size epochs")
            full_from = epoch
        size = SIZE if epoch >= full_from else cfg.train_size
        t0, total = time.perf_counter(), 0.0
        for i in range(0, len(items), cfg.batch):
            chunk = items[i:i + cfg.batch]
            # (B, 3 sequences, H, W): slice combo[s] of sequence s
            x = torch.as_tensor(np.stack([np.stack([p.grey[s, combo[s]] for s in range(3)]) for p, combo in chunk])
                                .astype(np.float32) / 255.0)
            x = augment(x, gen)
            if size != SIZE:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            y = torch.as_tensor([p.grade for p, _ in chunk])
            logits = net(*[x[:, s:s + 1].contiguous(memory_format=torch.channels_last) for s in range(3)])
            loss = F.cross_entropy(logits[:, 0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if steps < steps_per_epoch * cfg.epochs - 1:
                sched.step()
            total += loss.item() * len(chunk)
            steps += 1
            if (cfg.max_steps and steps >= cfg.max_steps) or (deadline and time.time() > deadline):
                break
            if size != SIZE and low_deadline and time.time() > low_deadline:
                break
        full = size == SIZE
        # low-resolution epochs: a cheap look (middle slices, train size); full size: as served
        probs = patient_probabilities(net, val) if full else middle_probabilities(net, val, size)
        scores = probs[:, 1] + probs[:, 2]
        auc = ev.auc_delong(labels, scores)[0] if 0 < labels.sum() < len(labels) else float("nan")
        history.append({"epoch": epoch + 1, "size": size, "loss": round(total / max(len(items), 1), 4),
                        "val_auc": round(auc, 4), "val_as_served": full,
                        "seconds": round(time.perf_counter() - t0, 1)})
        log(f"epoch {epoch + 1}: {history[-1]}")
        if progress is not None:
            progress(history[-1])
        if full:  # the epoch kept is the best as served
            if best is None or not auc <= best_auc:  # also takes a first nan epoch
                best, best_auc, stale = copy.deepcopy(net.state_dict()), auc, 0
            else:
                stale += 1
        if stale >= cfg.patience or (cfg.max_steps and steps >= cfg.max_steps):
            break
        if epoch + 1 >= cfg.epochs:
            break
        if deadline and time.time() > deadline:
            log("time budget reached")
            break
    if best is not None:
        net.load_state_dict(best)
    net = net.to(memory_format=torch.contiguous_format).eval()
    probs = patient_probabilities(net, val)
    scores = probs[:, 1] + probs[:, 2]
    if 0 < labels.sum() < len(labels):
        threshold = ev.youden_threshold(labels, scores)
        validation = {**ev.metrics_at(labels, scores, threshold), **ev.calibration_metrics(labels, scores)}
    else:
        threshold, validation = 0.5, {"note": "validation holds one class only"}
    return Trained(net, float(threshold), validation, history)
