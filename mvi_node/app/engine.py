"""The node's inference service: verified models, the served recipes, one engine, its metrics and readiness."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from mvi_node.clinical.source import ChainedClinicalSource, FileClinicalSource
from mvi_node.config import Settings
from mvi_node.infer.engine import Engine
from mvi_node.infer.registry import DEFAULT_ROOT, ModelRegistry
from mvi_node.metrics import GPU_MEMORY, INFERENCE_DEVICE, MODEL_INFO

log = logging.getLogger("mvi_node.infer")


def clinical_source(settings: Settings):
    """The configured file (if any), then what was POSTed to ``/clinical-factors``."""
    sources = []
    if settings.clinical.source is not None:
        sources.append(FileClinicalSource(settings.clinical.source))
    posted = settings.data_dir / "clinical"
    posted.mkdir(parents=True, exist_ok=True)
    sources.append(FileClinicalSource(posted))
    return ChainedClinicalSource(sources)


def build_engine(settings: Settings) -> Engine | None:
    """Load and verify every model; ``None`` when no model is installed.

    A manifest that does not match its ONNX file raises ManifestError: the node refuses
    to start rather than serve an unverified model.
    """
    roots = [DEFAULT_ROOT, *[Path(d) for d in settings.models.dirs]]
    registry = ModelRegistry(roots, pins=settings.models.pins)
    if not registry.models:
        log.warning("no model installed under %s: study jobs stop after selection", ", ".join(map(str, roots)))
        return None
    engine = Engine(registry, clinical_source(settings), providers=settings.models.providers,
                    precision=settings.inference.precision)
    device = engine.device
    for recipe in registry.models:
        model = registry.get(recipe)
        if model is None:
            continue
        for name, variant in model.variants.items():
            # the graph that will run (a reduced-precision copy when one passed its check)
            served = engine.identity(recipe, name)["sha256"] if variant.kind == "onnx" else variant.sha256
            MODEL_INFO.labels(recipe=recipe, version=model.version, sha256=served).set(1)
        INFERENCE_DEVICE.labels(recipe=recipe, device=device).set(1)
        log.info("serving %s %s on %s (%s)", recipe, model.version, device, ", ".join(engine.providers))
    if device == "cuda":
        _watch_gpu_memory()
    return engine


def warm_up(engine: Engine, stop: threading.Event | None = None) -> float:
    """Pay at start what the first exam would otherwise pay inside its job; returns seconds.

    Every served ONNX graph gets its session (ONNX Runtime's graph optimisation, 0.1-0.3 s
    a graph on a CPU), and highdicom loads the DICOM standard's module tables it checks
    an annotation SEG and builds an SR against (about 0.6 s of JSON, once per process).
    ``stop`` set: no further session is started (the node is shutting down; it waits
    for the one being made, since exiting under ONNX Runtime's threads aborts the process).
    """
    started = time.monotonic()
    for name in engine.registry.models:
        model = engine.registry.get(name)
        for variant, info in (model.variants.items() if model is not None else ()):
            if stop is not None and stop.is_set():
                return time.monotonic() - started
            if info.kind == "onnx":
                engine.session(model, variant)
    try:  # private to highdicom, hence guarded: without it the first exam loads them
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

        get_sop_class_iod_map(), get_iod_module_map(), get_module_attribute_map()
    except (ImportError, AttributeError):
        pass
    seconds = time.monotonic() - started
    log.info("models warmed up in %.2f s", seconds)
    return seconds


def _watch_gpu_memory() -> None:
    """GPU memory in use, read at scrape time through NVML when it is installed."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no NVML: the gauge stays absent rather than wrong
        log.info("NVML not available: mvi_gpu_memory_bytes not exported")
        return
    GPU_MEMORY.labels(device="cuda:0").set_function(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used)


def model_readiness(engine: Engine | None):
    def check() -> tuple[bool, str]:
        if engine is None:
            return False, "no model installed"
        loaded = [f"{r} {engine.registry.get(r).version}" for r in engine.registry.models if engine.registry.get(r)]
        return bool(loaded), ", ".join(loaded)

    return check
