"""``mvi-node train liver_tumor_seg_mr --out M [...]``: synthetic MR exams -> residual U-Net -> ONNX -> test -> manifest + card.

Without ``--cohort`` the trainer makes its own data: ``--train-exams`` MR exams
(``--train-seed``; vendors GE/Siemens/Philips; matrices 256/192/128; the generator's
agent mix, ~65 % gadoxetate), each written as DICOM and prepared by the serving path
(:mod:`.data`). Random ``--train-patch`` patches (``--p-tumour`` centred on a lesion,
lesion-balanced, 25 % on liver), every extra channel read up to ``--shift`` voxels off
and blanked with ``--p-blank``; Dice + cross-entropy, AdamW with warm-up and a cosine
schedule over a wall-clock budget (``--max-minutes``), bf16 autocast on the CPU
(``--no-bf16`` for fp32), 2 threads. The exported graph is scored as served (ONNX
Runtime sliding window over the registered sequences, post-processing) on a separate
set: ``--test-exams`` exams of ``--test-seed`` with another vendor mix (Canon, Siemens,
GE), with every sequence and, with ``--blank-test``, with the extra channels blank.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC_DEFAULT = True  # `mvi-node train liver_tumor_seg_mr` runs without --cohort

INTENDED_USE = ("Research and integration testing of the mvi-node pipeline only. Segments the liver and liver "
                "tumours on liver MRI (portal venous phase with the arterial, transitional and T2 sequences "
                "registered onto it) to give MR recipes an automatic tumour ROI (Lin et al., J Cancer 2024, "
                "seed 002). NOT FOR CLINICAL USE: trained on synthetic phantoms.")
TRAINING_DATA = "synthetic MR phantoms (mvi_node.synth.mr, gadoxetate and extracellular agents) — not for clinical use"
TRAIN_VENDORS = ("ge", "siemens", "philips")
TEST_VENDORS = ("canon", "siemens", "canon", "ge")
TRAIN_MATRICES = (256, 192, 256, 128)
TEST_MATRICES = (256, 192, 256)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-exams", type=int, default=64)
    p.add_argument("--val-exams", type=int, default=4)
    p.add_argument("--test-exams", type=int, default=16)
    p.add_argument("--train-seed", type=int, default=6100)
    p.add_argument("--test-seed", type=int, default=9300)
    p.add_argument("--max-minutes", type=float, default=30.0, help="wall-clock budget of the SGD loop")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke tests)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="processes preparing the training exams")
    p.add_argument("--cache", help="folder keeping the prepared training volumes (npz) between runs")
    p.add_argument("--p-tumour", type=float, default=0.6)
    p.add_argument("--class-weights", default="1,1,2", help="background,liver,tumour weights of Dice and CE")
    p.add_argument("--train-patch", default="32,64,64", help="z,y,x training patch (serving keeps its tile)")
    p.add_argument("--p-blank", type=float, default=0.15, help="probability an extra channel is blanked")
    p.add_argument("--shift", default="1,2,2", help="z,y,x voxels an extra channel is read off at most")
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 instead of bf16 autocast")
    p.add_argument("--init", help="start from this state dict (evaluate-only: the weights to test)")
    p.add_argument("--evaluate-only", action="store_true", help="no SGD: export --init and test it")
    p.add_argument("--blank-test", action="store_true", help="also test with the extra channels blank")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _jobs(n: int, seed: int, vendors, matrices, offset: int = 0) -> list[tuple]:
    return [(seed, offset + i, vendors[i % len(vendors)], matrices[i % len(matrices)]) for i in range(n)]


def _volumes(jobs: list[tuple], workers: int, cache: Path | None):
    from mvi_node.recipes.liver_tumor_seg_mr.data import training_volumes
    from mvi_node.recipes.seg_patches import volume_of

    out, todo = {}, []
    for job in jobs:
        f = cache / f"{'-'.join(map(str, job))}.npz" if cache else None
        if f is not None and f.exists():
            with np.load(f) as z:
                out[job] = volume_of(z["x"], z["y"], str(z["key"]))
        else:
            todo.append(job)
    if todo:
        made = training_volumes(todo, workers)
        by_key = {tuple(v.key.split("|")[1:3]): v for v in made}
        for job in todo:
            v = by_key.get((str(job[0]), str(job[1])))
            if v is None:
                continue
            out[job] = v
            if cache:
                cache.mkdir(parents=True, exist_ok=True)
                np.savez(cache / f"{'-'.join(map(str, job))}.npz", x=v.x.astype(np.float16), y=v.y, key=v.key)
    vols = [out[j] for j in jobs if j in out]
    for v in vols:
        v.x = v.x.astype(np.float32)
    return vols


def _val_dice(net, vols, recipe) -> dict[str, float]:
    import torch
    from monai.inferers import sliding_window_inference

    net.eval()
    t, lv = [], []
    with torch.no_grad():
        for v in vols:
            p = sliding_window_inference(torch.from_numpy(v.x[None]), recipe.patch, 1,
                                         lambda a: torch.softmax(net(a), 1), overlap=recipe.overlap, mode="gaussian")
            pred = p[0].argmax(0).numpy()
            for cls, acc in ((2, t), (1, lv)):
                a, b = pred == cls, v.y == cls
                if a.sum() + b.sum():
                    acc.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    net.train()
    return {"tumour_dice": round(float(np.mean(t)), 4) if t else float("nan"),
            "liver_dice": round(float(np.mean(lv)), 4) if lv else float("nan")}


class _Blank:
    """A runner whose graph sees the extra channels as zeros (an exam with the target alone)."""

    def __init__(self, runner) -> None:
        self.runner, self.variants, self.input_channels = runner, runner.variants, runner.input_channels

    def threshold(self, variant):
        return self.runner.threshold(variant)

    def run(self, variant, feeds, outputs, batched=()):
        x = np.array(feeds["image"], np.float32)
        x[:, 1:] = 0.0
        return self.runner.run(variant, {"image": x}, outputs)


def _test(args, recipe, runner, identity, work: Path) -> tuple[dict, dict]:
    from mvi_node.recipes.seg_evaluate import evaluate_exams
    from mvi_node.synth import make_exam

    root = work / "test"
    entries = [make_exam(root, "mr", args.test_seed, i, vendor=TEST_VENDORS[i % len(TEST_VENDORS)],
                         matrix=TEST_MATRICES[i % len(TEST_MATRICES)], hard_cases="none", annotations="none")
               for i in range(args.test_exams)]
    tests, per_exam = {}, {}
    runs = [("all sequences", runner)] + ([("portal venous only", _Blank(runner))] if args.blank_test else [])
    for name, r in runs:
        _log(f"test set {name}: {len(entries)} exams")
        rows, summary = evaluate_exams(root, entries, recipe, r, identity, log=_log)
        summary.update({"seed": args.test_seed, "vendors": sorted({e["vendor"] for e in entries}),
                        "agents": sorted({str(e.get("agent")) for e in entries}),
                        "matrices": sorted(set(TEST_MATRICES[i % len(TEST_MATRICES)] for i in range(len(entries))))})
        tests[name], per_exam[name] = summary, rows
        _log(f"test set {name}: {json.dumps(summary)}")
    return tests, per_exam


def _onnx_matches_torch(net, path: Path, patch, channels: int) -> float:
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(0).random((1, channels, *patch), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = torch.softmax(net.eval()(torch.from_numpy(x)), 1).numpy()
    return float(np.abs(sess.run(["probabilities"], {"image": x})[0] - ref).max())


def main(args: argparse.Namespace) -> int:
    import torch
    from monai.losses import DiceCELoss

    from mvi_node.infer.manifest import sha256_file
    from mvi_node.recipes.liver_tumor_seg_mr.card import write_card, write_manifest
    from mvi_node.recipes.liver_tumor_seg_mr.recipe import NAME, LiverTumorSegMr
    from mvi_node.recipes.seg_evaluate import OrtRunner
    from mvi_node.recipes.seg_network import build_unet, describe_unet, export_onnx
    from mvi_node.recipes.seg_patches import patch_batch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    recipe = LiverTumorSegMr()
    channels = len(recipe.channel_roles)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    cache = Path(args.cache) if args.cache else None
    train_patch = tuple(int(v) for v in args.train_patch.split(","))
    shift = tuple(int(v) for v in args.shift.split(","))

    t0 = time.time()
    n_train = 0 if args.evaluate_only else args.train_exams
    train = _volumes(_jobs(n_train, args.train_seed, TRAIN_VENDORS, TRAIN_MATRICES), args.workers, cache)
    val = _volumes(_jobs(args.val_exams, args.train_seed, TRAIN_VENDORS, (256,), offset=args.train_exams),
                   args.workers, cache)
    data_seconds = round(time.time() - t0, 1)
    agents = {a: sum(v.key.split("|")[4] == a for v in train) for a in ("gd-eob", "extracellular")}
    if train:
        voxels = np.bincount(np.concatenate([v.y.ravel() for v in train]), minlength=3)
        _log(f"data: {len(train)} train + {len(val)} validation volumes in {data_seconds} s; agents {agents}; "
             f"label fractions {np.round(voxels / voxels.sum(), 4).tolist()}")

    net = build_unet(in_channels=channels)
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu"))
    weights = torch.tensor([float(w) for w in args.class_weights.split(",")])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, weight=weights)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.max_minutes * 60.0
    bf16 = not args.no_bf16
    step, losses, history = 0, [], []
    t0 = time.time()
    net.train()
    while not args.evaluate_only and train:
        elapsed = time.time() - t0
        frac = elapsed / budget
        if frac >= 1.0 or (args.max_steps and step >= args.max_steps):
            break
        lr = args.lr * min(1.0, (step + 1) / 30) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        xb, yb = patch_batch(train, rng, train_patch, args.batch, p_tumour=args.p_tumour,
                             p_liver=min(0.25, 1.0 - args.p_tumour), p_blank=args.p_blank, shift=shift,
                             lesion_balanced=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(torch.from_numpy(xb))
        loss = loss_fn(logits.float(), torch.from_numpy(yb))
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            history.append({"step": step, "seconds": round(elapsed, 1), "loss": round(float(np.mean(losses[-50:])), 4)})
            _log(f"step {step} {elapsed / 60:.1f} min loss {np.mean(losses[-50:]):.4f} lr {lr:.5f}")
    train_seconds = round(time.time() - t0, 1)
    torch.save(net.state_dict(), Path(tempfile.gettempdir()) / f"{NAME}-{args.version}.pt")  # not shipped
    val_metrics = _val_dice(net, val, recipe) if val else {}
    _log(f"trained {step} steps in {train_seconds} s; validation {val_metrics}")

    onnx_path = export_onnx(net, out / "model.onnx", recipe.patch, channels=channels)
    check = _onnx_matches_torch(net, onnx_path, recipe.patch, channels)
    _log(f"exported {onnx_path} (ONNX vs torch max |diff| {check:.2e})")
    identity = {"recipe": NAME, "model_version": args.version, "variant": "segmentation",
                "sha256": sha256_file(onnx_path), "intended_use": INTENDED_USE, "training_data": TRAINING_DATA}
    runner = OrtRunner(onnx_path, threads=args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="mrseg-test-") as work:
        tests, per_exam = _test(args, recipe, runner, identity, Path(work)) if args.test_exams else ({}, {})
    test_seconds = round(time.time() - t0, 1)
    training: dict[str, Any] = {
        "command": "mvi-node train liver_tumor_seg_mr " + " ".join(shlex.quote(a) for a in sys.argv[3:]),
        "network": describe_unet(), "loss": "Dice + cross-entropy (MONAI DiceCELoss, softmax, batch Dice)",
        "optimizer": f"AdamW lr {args.lr} weight decay 1e-4, warm-up 30 steps, cosine to 5 % over the budget",
        "precision": "bf16 autocast (CPU, AMX), fp32 weights and loss" if bf16 else "fp32",
        "batch": args.batch, "patch": list(train_patch), "steps": step, "threads": args.threads,
        "data_seconds": data_seconds, "train_seconds": train_seconds, "test_seconds": test_seconds,
        "wall_seconds": round(time.time() - t_all, 1), "seed": args.seed,
        "train_exams": len(train), "train_seed": args.train_seed, "train_agents": agents,
        "train_vendors": list(TRAIN_VENDORS), "train_matrices": sorted(set(TRAIN_MATRICES)),
        "patch_sampling": f"{args.p_tumour:.0%} centred on a lesion voxel (lesion drawn uniformly), "
                          f"{min(0.25, 1 - args.p_tumour):.0%} on a liver voxel, the rest anywhere (+-1/4 patch jitter)",
        "augmentation": "intensity x U(0.9, 1.1) + U(-0.05, 0.05), Gaussian noise sd U(0, 0.03); each extra "
                        f"channel read up to {shift} (z, y, x) voxels off the target and blanked to 0 (a missing "
                        f"sequence) with p {args.p_blank}",
        "validation": val_metrics, "onnx_vs_torch_max_abs_diff": check, "class_weights": args.class_weights,
        "channels": list(recipe.channel_roles), "loss_history": history,
    }
    if args.evaluate_only and args.init:
        prev = Path(args.init).with_suffix(".json")
        if prev.exists():  # the training record the SGD run left beside its weights
            training = {**json.loads(prev.read_text(encoding="utf-8")), "test_seconds": test_seconds,
                        "evaluate_command": training["command"], "onnx_vs_torch_max_abs_diff": check}
    else:
        Path(tempfile.gettempdir(), f"{NAME}-{args.version}.json").write_text(json.dumps(training), encoding="utf-8")
    write_manifest(out, args.version, identity, recipe, training, tests, INTENDED_USE, TRAINING_DATA)
    write_card(out, args.version, recipe, training, tests)
    (out / "test_per_exam.json").write_text(json.dumps(per_exam, indent=1) + "\n", encoding="utf-8")
    _log(f"wrote {out} in {training.get('wall_seconds')} s")
    return 0
