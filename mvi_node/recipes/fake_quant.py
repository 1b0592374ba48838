"""Quantisation-aware fine-tuning: the int8 arithmetic ONNX Runtime will do, simulated in torch.

``mvi-node quantize`` (:mod:`mvi_node.infer.quantize`) turns a served fp32 graph into a QDQ
int8 copy: per-channel symmetric int8 weights (QInt8), per-tensor asymmetric uint8
activations (QUInt8). A network trained in float has never seen that rounding, and on
seed 000's ResNet it moved calibrated probabilities by up to 0.03 and Grad-CAM maps to
r 0.936 (bench/RESULTS.md). Training a few epochs with the rounding in the forward pass
and the straight-through estimator in the backward pass (Jacob et al., CVPR 2018, §3;
Krishnamoorthi 2018, §3.2) lets the weights settle where int8 costs little. The result is
exported as a plain fp32 graph and quantised by the same tool as before, so the served
int8 copy still passes the unchanged accuracy check against its own fp32 graph.

:func:`prepare` adds the simulation to a network's convolutions in place (forward hooks
and a weight parametrisation, so the network's own code is unchanged); :func:`strip`
removes it again, keeping the fine-tuned float weights.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

#: uint8 activations, as ORT's QUInt8
ACT_QMIN, ACT_QMAX = 0, 255
#: values kept per activation and batch when collecting percentile ranges: 16 batches give
#: 4M, so the 0.005 % tail on each side rests on about 200 values
COLLECT_PER_BATCH = 1 << 18
#: int8 weights, symmetric, as ORT's QInt8 with symmetric weights: -127..127, scale = max|w| / 127
W_QMIN, W_QMAX = -127, 127


class ActivationFakeQuant(nn.Module):
    """Per-tensor asymmetric uint8 rounding of an activation; its range is a moving
    average of the batches' min and max while training (frozen in eval)."""

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))
        #: record ranges without rounding (see :func:`observe`)
        self.observing = False
        #: ranges set by :func:`percentile_ranges` stay put while training
        self.frozen = False
        #: while collecting (:func:`percentile_ranges`): a subsample of every input seen
        self.collected: list[torch.Tensor] | None = None
        #: pass values through unrounded (see :func:`float_arithmetic`)
        self.bypass = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bypass:
            return x
        if self.collected is not None:
            flat = x.detach().flatten()
            keep = torch.randint(0, flat.numel(), (min(flat.numel(), COLLECT_PER_BATCH),), device=flat.device)
            self.collected.append(flat[keep].float())
            return x
        if (self.training and not self.frozen) or self.observing:
            with torch.no_grad():
                lo, hi = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
                if not bool(self.seen):
                    self.lo.copy_(lo), self.hi.copy_(hi), self.seen.fill_(True)
                else:
                    self.lo.lerp_(lo, self.momentum), self.hi.lerp_(hi, self.momentum)
        if not bool(self.seen) or self.observing:
            return x
        scale = float(max((self.hi - self.lo).item() / (ACT_QMAX - ACT_QMIN), 1e-8))
        zero = int(min(max(round(-self.lo.item() / scale), ACT_QMIN), ACT_QMAX))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, ACT_QMIN, ACT_QMAX)


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 rounding of a convolution's weight."""

    def __init__(self) -> None:
        super().__init__()
        #: pass the weight through unrounded (see :func:`float_arithmetic`)
        self.bypass = False

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bypass:
            return w
        scale = (w.detach().abs().flatten(1).amax(1) / ((W_QMAX - W_QMIN) / 2)).clamp(min=1e-8)
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, 0, W_QMIN, W_QMAX)


def _quantise_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_fq(args[0]), *args[1:])


def _quantise_output(module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
    return module.output_fq(out)


def prepare(net: nn.Module, skip: Iterable[str] = (), outputs: Iterable[str] = ()) -> list[str]:
    """Simulate int8 on every ``nn.Conv2d``/``nn.Conv3d`` of ``net`` not named in ``skip``
    (kept float, as ``mvi-node quantize`` keeps them): input activation and weight; and
    the output of those named in ``outputs`` (the tensors ORT quantises before a residual
    add). Returns the names of the simulated convolutions."""
    skip, outputs = set(skip), set(outputs)
    done = []
    for name, m in net.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Conv3d)) or name in skip:
            continue
        m.input_fq = ActivationFakeQuant()
        m._fq_hooks = [m.register_forward_pre_hook(_quantise_input)]
        if name in outputs:
            m.output_fq = ActivationFakeQuant()
            m._fq_hooks.append(m.register_forward_hook(_quantise_output))
        parametrize.register_parametrization(m, "weight", WeightFakeQuant())
        done.append(name)
    return done


@contextlib.contextmanager
def observe(net: nn.Module, momentum: float = 1.0) -> Iterator[None]:
    """Inside: forward passes record each activation's range on the float arithmetic (no
    rounding), as ORT's calibration does; ``momentum`` 1.0 keeps the last batch's range.
    Gives the ranges the quantiser would pick (the fine-tune itself does not start from
    them: its ranges follow the training batches, rounded upstream)."""
    fqs = [m for m in net.modules() if isinstance(m, ActivationFakeQuant)]
    saved = [m.momentum for m in fqs]
    for m in fqs:
        m.observing, m.momentum = True, momentum
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mom in zip(fqs, saved):
            m.observing, m.momentum = False, mom


@contextlib.contextmanager
def float_arithmetic(net: nn.Module) -> Iterator[None]:
    """Inside: the network runs in plain float, nothing rounded, the same weights; gradients
    flow as usual. Lets one training step compare the fp32 graph a network will export with
    the int8 copy the quantiser will make of it (``distill --self-consistent``)."""
    fqs = [m for m in net.modules() if isinstance(m, (ActivationFakeQuant, WeightFakeQuant))]
    saved = [m.bypass for m in fqs]
    for m in fqs:
        m.bypass = True
    try:
        yield
    finally:
        for m, b in zip(fqs, saved):
            m.bypass = b


@contextlib.contextmanager
def percentile_ranges(net: nn.Module, percentile: float) -> Iterator[None]:
    """Inside: forward passes (float arithmetic, nothing rounded) collect a subsample of
    every simulated activation. On leaving, each range is set where ``mvi-node quantize``
    will put it: ONNX Runtime's percentile calibration, non-symmetric, cuts
    ``(100 - percentile) / 2`` % off each side of the values, and quantisation widens the
    range to hold 0. The ranges are then frozen: fine-tuning trains against the grid the
    int8 copy will have, not one that drifts with the batches."""
    fqs = [m for m in net.modules() if isinstance(m, ActivationFakeQuant)]
    for m in fqs:
        m.collected = []
    cut = (100.0 - percentile) / 200.0
    try:
        with torch.no_grad():
            yield
        for m in fqs:
            if not m.collected:
                raise ValueError("percentile_ranges: an activation saw no input")
            values = torch.cat(m.collected)
            lo, hi = torch.quantile(values, torch.tensor([cut, 1.0 - cut]))
            m.lo.fill_(min(float(lo), 0.0)), m.hi.fill_(max(float(hi), 0.0))
            m.seen.fill_(True)
            m.frozen = True
    finally:
        for m in fqs:
            m.collected = None


def strip(net: nn.Module) -> nn.Module:
    """Remove what :func:`prepare` added; the float weights stay as fine-tuned."""
    for m in net.modules():
        for hook in getattr(m, "_fq_hooks", ()):
            hook.remove()
        for attr in ("_fq_hooks", "input_fq", "output_fq"):
            if hasattr(m, attr):
                delattr(m, attr)
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    return net
