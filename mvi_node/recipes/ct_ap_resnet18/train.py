"""Training of seed 000 (Liu et al. 2021) on the crops the serving path prepared: torch + MONAI.

Augmentation (training only): rotation +-10 deg, random crop of 0.8-1.0 of the area with
aspect 0.95-1.05 resized back to 256, horizontal flip p=0.5. SGD lr 3e-4, momentum 0.9,
weight decay 1e-5, batch 8, cross-entropy. Patients are split (stratified, seeded) so
no patient has slices on both sides; a patient's score is the max over its slices; the
threshold is Youden's J on validation. Each epoch samples a few tumour slices per
patient (CPU budget); training stops early when validation AUC stops improving.

The image-only variant is trained first; the clinical variant starts from its weights
(all layers trainable, as in the paper) and adds the 9-unit clinical branch.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from monai.transforms import Compose, RandFlip, RandomizableTransform, RandRotate, Resize
from monai.utils import set_determinism
from torch import nn

from mvi_node import evaluation as ev
from mvi_node.recipes.ct_ap_resnet18.batches import batch_inputs, epoch_slices, to_input
from mvi_node.recipes.ct_ap_resnet18.data import PatientCrops
from mvi_node.recipes.ct_ap_resnet18.network import MviResNet18


class RandScaleAspectCrop(RandomizableTransform):
    """Random crop of ``scale`` of the area and ``ratio`` aspect, resized to the input size
    (the random-resized-crop of the paper; MONAI has no exact equivalent)."""

    def __init__(self, scale=(0.8, 1.0), ratio=(0.95, 1.05)) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale, self.ratio = scale, ratio

    def __call__(self, img):
        h, w = img.shape[-2:]
        area = h * w * self.R.uniform(*self.scale)
        aspect = math.exp(self.R.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        ch = int(round(min(h, math.sqrt(area / aspect))))
        cw = int(round(min(w, math.sqrt(area * aspect))))
        r0 = int(self.R.randint(0, h - ch + 1))
        c0 = int(self.R.randint(0, w - cw + 1))
        return Resize((h, w), mode="bilinear")(img[..., r0:r0 + ch, c0:c0 + cw])


def augmenter(seed: int) -> Compose:
    t = Compose([
        RandRotate(range_x=math.radians(10), prob=1.0, keep_size=True, padding_mode="zeros"),
        RandScaleAspectCrop(),
        RandFlip(prob=0.5, spatial_axis=1),  # axis 1 of (C, rows, cols): left-right
    ])
    t.set_random_state(seed=seed)
    return t


def split_patients(patients: list[PatientCrops], val_fraction: float, seed: int):
    """Stratified by label, seeded; returns (train, validation) with no shared patient."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in (0, 1):
        group = sorted((p for p in patients if p.label == label), key=lambda p: p.patient_id)
        order = rng.permutation(len(group))
        n_val = max(1, int(round(len(group) * val_fraction)))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    assert not {p.patient_id for p in train} & {p.patient_id for p in val}
    return train, val


@torch.no_grad()
def patient_scores(net: MviResNet18, patients: list[PatientCrops], batch: int = 32) -> np.ndarray:
    """Max over slices of P(MVI) per patient (seed 000's decision rule)."""
    net.eval()
    out = []
    for p in patients:
        probs = []
        for i in range(0, len(p.grey), batch):
            x = to_input(p.grey[i:i + batch])
            c = torch.as_tensor(p.clinical[None].repeat(len(x), 0)) if net.clinical else None
            probs.append(torch.softmax(net(x, c), 1)[:, 1])
        out.append(float(torch.cat(probs).max()))
    return np.asarray(out)


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 12
    clinical_epochs: int = 4
    slices_per_patient: int = 3
    batch: int = 8
    lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 1e-5
    patience: int = 3
    val_fraction: float = 0.2
    max_minutes: float | None = None
    max_steps: int | None = None  # tests: a few steps only
    #: quantisation-aware fine-tuning: a served model folder whose fp32 graphs are the start
    #: (each variant from its own graph), int8 simulated in training; None trains from scratch
    qat_from: str | None = None
    #: with ``qat_from``: distil the int8 student from the served graph instead of fitting the
    #: labels (:mod:`mvi_node.recipes.ct_ap_resnet18.distill`)
    distill: bool = False
    #: with ``qat_from``: simulate the first convolution in int8 too (``mvi-node quantize --no-float-first``)
    int8_first_conv: bool = False
    #: with ``distill``: weight of the int8-against-own-fp32 term; the result is a new fp32
    #: model, served with its own calibration (:func:`~mvi_node.recipes.ct_ap_resnet18.distill.distil`)
    self_consistent: float = 0.0
    #: with ``distill``: calibration slices for the frozen activation ranges
    range_samples: int = 256


@dataclass
class Trained:
    net: MviResNet18
    threshold: float
    validation: dict
    history: list[dict] = field(default_factory=list)


def fit(net: MviResNet18, train: list[PatientCrops], val: list[PatientCrops], cfg: TrainConfig, epochs: int,
        log: Callable[[str], None] = print, deadline: float | None = None,
        progress: Callable[[dict], None] | None = None) -> Trained:
    """SGD with early stopping on validation AUC; the best epoch's weights are kept.
    ``progress(history entry)`` after each epoch."""
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    aug = augmenter(cfg.seed)
    labels = np.array([p.label for p in val])
    best, best_auc, stale, history, steps = None, -1.0, 0, [], 0
    for epoch in range(epochs):
        items = epoch_slices(train, cfg.slices_per_patient, (cfg.seed, epoch))
        net.train()
        t0, total = time.perf_counter(), 0.0
        for i in range(0, len(items), cfg.batch):
            chunk = items[i:i + cfg.batch]
            x, c = batch_inputs(chunk, aug, net.clinical)
            y = torch.as_tensor([p.label for p, _ in chunk])
            opt.zero_grad()
            loss = loss_fn(net(x, c), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(chunk)
            steps += 1
            if cfg.max_steps and steps >= cfg.max_steps:
                break
        scores = patient_scores(net, val)
        auc = ev.auc_delong(labels, scores)[0] if 0 < labels.sum() < len(labels) else float("nan")
        history.append({"epoch": epoch + 1, "loss": round(total / max(len(items), 1), 4),
                        "val_auc": round(auc, 4), "seconds": round(time.perf_counter() - t0, 1)})
        log(f"epoch {epoch + 1}: {history[-1]}")
        if progress is not None:
            progress(history[-1])
        if not auc <= best_auc:  # also takes the first (nan) epoch
            best, best_auc, stale = copy.deepcopy(net.state_dict()), auc, 0
        else:
            stale += 1
        if stale >= cfg.patience or (cfg.max_steps and steps >= cfg.max_steps):
            break
        if deadline and time.time() > deadline:
            log("time budget reached")
            break
    if best is not None:
        net.load_state_dict(best)
    return _finish(net, val, history)


def _finish(net: MviResNet18, val: list[PatientCrops], history: list[dict]) -> Trained:
    """The threshold (Youden's J) and the validation figures of a trained ``net``."""
    labels = np.array([p.label for p in val])
    scores = patient_scores(net, val)
    if 0 < labels.sum() < len(labels):
        threshold = ev.youden_threshold(labels, scores)
        validation = {**ev.metrics_at(labels, scores, threshold), **ev.calibration_metrics(labels, scores)}
    else:
        threshold, validation = 0.5, {"note": "validation holds one class only"}
    return Trained(net, threshold, validation, history)


def train_variants(patients: list[PatientCrops], cfg: TrainConfig, log: Callable[[str], None] = print,
                   validation: list[PatientCrops] | None = None,
                   progress: Callable[[str, dict], None] | None = None) -> dict[str, Trained]:
    """Image-only first, then the clinical variant from its weights.

    ``patients`` are the training set when ``validation`` is given (the cohort's patient
    split), else split here (:func:`split_patients`). The clinical variant trains and
    validates on the patients with every factor known; it is left out when none in
    training has them. ``progress(variant, history entry)`` after each epoch.
    """
    set_determinism(seed=cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if validation is None:
        train, val = split_patients(patients, cfg.val_fraction, cfg.seed)
    else:
        train, val = list(patients), list(validation)
    log(f"patients: {len(train)} training, {len(val)} validation (split by patient)")
    deadline = time.time() + cfg.max_minutes * 60 if cfg.max_minutes else None
    share = None if deadline is None else time.time() + 0.7 * (deadline - time.time())

    def step(variant: str):
        return None if progress is None else (lambda entry: progress(variant, entry))

    train_c = [p for p in train if p.clinical is not None]
    val_c = [p for p in val if p.clinical is not None]
    if cfg.qat_from:
        return _fine_tune_quantisation_aware((train, val), (train_c, val_c), cfg, log, share, deadline, step)
    img = fit(MviResNet18(clinical=False), train, val, cfg, cfg.epochs, log, share, step("image_only"))
    out = {"image_only": img}
    if not train_c:
        log("clinical variant not trained: no training patient has every clinical factor")
        set_determinism(seed=None)
        return out
    if len(train_c) < len(train) or len(val_c) < len(val):
        log(f"clinical variant: {len(train_c)} training, {len(val_c)} validation patients with every factor")
    set_determinism(seed=cfg.seed + 1)
    clin_net = MviResNet18(clinical=True)
    state = {k: v for k, v in img.net.state_dict().items() if not k.startswith("fc.")}
    clin_net.load_state_dict(state, strict=False)
    with torch.no_grad():  # start from the image-only decision, clinical weights small
        clin_net.fc.weight[:, :512] = img.net.fc.weight
        clin_net.fc.weight[:, 512:] = 0.0
        clin_net.fc.bias[:] = img.net.fc.bias
    out["clinical"] = fit(clin_net, train_c, val_c, cfg, cfg.clinical_epochs, log, deadline, step("clinical"))
    set_determinism(seed=None)
    return out


def _fine_tune_quantisation_aware(image_only, clinical, cfg: TrainConfig, log, share, deadline,
                                  step) -> dict[str, Trained]:
    """Both variants from ``cfg.qat_from``'s graphs, int8 simulated, then the simulation
    stripped: the returned nets are float, to be exported and quantised as usual."""
    from pathlib import Path

    from mvi_node.recipes.ct_ap_resnet18.qat import from_onnx, prepare_qat
    from mvi_node.recipes.fake_quant import strip

    folder = Path(cfg.qat_from)
    out: dict[str, Trained] = {}
    for variant, file, patients, budget in (
            ("image_only", "model_image_only.onnx", image_only, share),
            ("clinical", "model.onnx", clinical, deadline)):
        if not (folder / file).is_file() or not patients[0]:
            log(f"{variant}: not fine-tuned ({folder / file} missing or no patient has every factor)")
            continue
        net = from_onnx(folder / file)
        simulated = prepare_qat(net, first_conv=cfg.int8_first_conv)
        log(f"{variant}: quantisation-aware from {folder / file}, {len(simulated)} convolutions int8"
            + (", distilled from it" if cfg.distill else ""))
        epochs = cfg.epochs if variant == "image_only" else cfg.clinical_epochs
        if cfg.distill:
            from mvi_node.infer.manifest import load_model
            from mvi_node.infer.quantize import PERCENTILE
            from mvi_node.recipes.ct_ap_resnet18.distill import distil
            from mvi_node.recipes.fake_quant import percentile_ranges

            with percentile_ranges(net, PERCENTILE):  # where mvi-node quantize will put them
                _range_pass(net, patients[0], cfg)
            calibration = load_model(folder).variants[variant].calibration
            net, history = distil(net, from_onnx(folder / file), *patients, cfg, epochs, augmenter(cfg.seed), log,
                                  budget, step(variant), calibration=calibration)
            tr = _finish(net, patients[1], history)
        else:
            tr = fit(net, *patients, cfg, epochs, log, budget, step(variant))
        tr.net = strip(tr.net).eval()
        out[variant] = tr
    set_determinism(seed=None)
    return out


@torch.no_grad()
def _range_pass(net: MviResNet18, patients: list[PatientCrops], cfg: TrainConfig, batch: int = 16) -> None:
    """Float passes over ``cfg.range_samples`` training slices, spread over the patients
    (seeded), unaugmented as served: what :func:`~mvi_node.recipes.fake_quant.percentile_ranges` collects."""
    rng = np.random.default_rng([cfg.seed, 7])
    items = [(p, z) for p in patients for z in range(len(p.grey))]
    pick = rng.permutation(len(items))[:cfg.range_samples]
    chosen = [items[i] for i in pick]
    net.eval()
    for i in range(0, len(chosen), batch):
        part = chosen[i:i + batch]
        x = to_input(np.stack([p.grey[z] for p, z in part]))
        c = torch.as_tensor(np.stack([p.clinical for p, _ in part])) if net.clinical else None
        net(x, c)
