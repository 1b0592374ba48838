"""Seed 000 network: shapes, ONNX export (probability + in-graph Grad-CAM), training, metrics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from monai.visualize import GradCAM  # noqa: E402

from mvi_node import evaluation as ev  # noqa: E402
from mvi_node.recipes.ct_ap_resnet18.data import PatientCrops  # noqa: E402
from mvi_node.recipes.ct_ap_resnet18.export import export_onnx  # noqa: E402
from mvi_node.recipes.ct_ap_resnet18.network import MviResNet18, normalise_map  # noqa: E402
from mvi_node.recipes.ct_ap_resnet18.train import (TrainConfig, augmenter, fit, split_patients,  # noqa: E402
                                                   train_variants)


def _net(clinical: bool, seed: int = 0) -> MviResNet18:
    torch.manual_seed(seed)
    net = MviResNet18(clinical)
    # a few BN statistics that are not identity, so eval mode is exercised
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, 256, 256), torch.rand(4, 9) if clinical else None)
    return net.eval()


@pytest.mark.parametrize("clinical", [True, False])
def test_onnx_matches_torch_probability_and_autograd_gradcam(tmp_path, clinical):
    net = _net(clinical)
    path = export_onnx(net, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    x = rng.random((3, 3, 256, 256), dtype=np.float32)
    c = rng.random((3, 9), dtype=np.float32)
    feed = {"image": x, **({"clinical": c} if clinical else {})}
    prob, cam = sess.run(["probability", "gradcam"], feed)
    xt, ct = torch.from_numpy(x), torch.from_numpy(c) if clinical else None
    with torch.no_grad():
        ref = torch.softmax(net(xt, ct), 1)[:, 1].numpy()
    assert prob.shape == (3,) and np.abs(prob - ref).max() < 1e-5

    class Fixed(torch.nn.Module):  # MONAI's GradCAM calls the model with one input
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image, ct)

    gc = GradCAM(Fixed(), target_layers="net.backbone.layer4", postprocessing=normalise_map)
    auto = gc(xt, class_idx=1)[:, 0].detach().numpy()
    assert cam.shape == (3, 256, 256)
    assert np.abs(cam - auto).max() < 1e-4
    assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6


def test_gradcam_weights_ignore_the_clinical_part_of_the_last_fc(tmp_path):
    net = _net(True)
    path = export_onnx(net, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).random((1, 3, 256, 256), dtype=np.float32)
    a = sess.run(["gradcam"], {"image": x, "clinical": np.zeros((1, 9), np.float32)})[0]
    b = sess.run(["gradcam"], {"image": x, "clinical": np.ones((1, 9), np.float32) * 5})[0]
    assert np.array_equal(a, b)


def test_augmentation_keeps_shape_and_is_seeded():
    img = torch.rand(1, 256, 256)
    a1, a2, b = augmenter(3)(img), augmenter(3)(img), augmenter(4)(img)
    assert tuple(a1.shape) == (1, 256, 256)
    assert torch.equal(torch.as_tensor(a1), torch.as_tensor(a2))
    assert not torch.equal(torch.as_tensor(a1), torch.as_tensor(b))


def _patients(n: int = 8) -> list[PatientCrops]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        label = i % 2
        grey = rng.normal(100 + 40 * label, 20, (2, 256, 256)).clip(0, 255).astype(np.float16)
        out.append(PatientCrops(f"P{i}", label, grey, rng.random(9).astype(np.float32), "ge"))
    return out


def test_split_is_by_patient_and_stratified():
    pts = _patients(20)
    train, val = split_patients(pts, 0.2, seed=0)
    assert not {p.patient_id for p in train} & {p.patient_id for p in val}
    assert len(train) + len(val) == 20 and {p.label for p in val} == {0, 1}


def test_training_a_few_steps_is_deterministic_and_gives_both_variants():
    cfg = TrainConfig(seed=5, epochs=1, clinical_epochs=1, max_steps=2, slices_per_patient=1, val_fraction=0.25)
    a = train_variants(_patients(), cfg, log=lambda m: None)
    b = train_variants(_patients(), cfg, log=lambda m: None)
    assert set(a) == {"clinical", "image_only"}
    assert a["clinical"].net.clinical and not a["image_only"].net.clinical
    for k in a:
        sa, sb = a[k].net.state_dict(), b[k].net.state_dict()
        assert all(torch.equal(sa[n], sb[n]) for n in sa)
        assert 0.0 <= a[k].threshold <= 1.0 and "auc" in a[k].validation


def test_given_validation_is_used_and_clinical_variant_needs_factors():
    pts = _patients()
    for p in pts[:3]:
        p.clinical = None
    cfg = TrainConfig(seed=1, epochs=1, clinical_epochs=1, max_steps=1, slices_per_patient=1)
    seen = []
    out = train_variants(pts[:6], cfg, log=lambda m: None, validation=pts[6:], progress=lambda v, e: seen.append(v))
    assert set(out) == {"clinical", "image_only"} and seen == ["image_only", "clinical"]
    assert out["image_only"].validation["patients"] == 2
    for p in pts:
        p.clinical = None
    assert set(train_variants(pts[:6], cfg, log=lambda m: None, validation=pts[6:])) == {"image_only"}


def test_patient_crops_from_a_training_example():
    from mvi_node.infer.recipe import TrainingExample
    from mvi_node.recipes.ct_ap_resnet18.data import TrainingCrops, patient_crops

    kept = TrainingCrops(np.zeros((2, 256, 256), np.float16), None, (3, 4))
    ex = TrainingExample("row 1", "abc", {"mvi": 1}, "train", kept, {"manufacturer": "GE"}, row=1)
    p = patient_crops(ex)
    assert (p.patient_id, p.label, p.vendor, p.clinical) == ("abc", 1, "GE", None) and p.grey.shape == (2, 256, 256)


def test_fit_changes_weights():
    pts = _patients()
    net = MviResNet18(False)
    before = net.fc.weight.detach().clone()
    fit(net, pts[:6], pts[6:], TrainConfig(max_steps=1), epochs=1, log=lambda m: None)
    assert not torch.equal(before, net.fc.weight)


def test_auc_matches_pairwise_definition_and_delong_ci_covers_it():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.4
    s = rng.normal(y * 1.0, 1.0)
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    auc, lo, hi = ev.auc_ci(y, s)
    assert auc == pytest.approx(pairwise) and lo < auc < hi


def test_youden_threshold_separates_a_separable_set():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t = ev.youden_threshold(y, s)
    m = ev.metrics_at(y, s, t)
    assert 0.3 < t <= 0.7 and m["sensitivity"] == m["specificity"] == m["accuracy"] == 1.0 and m["auc"] == 1.0


def test_train_command_on_a_synth_folder_writes_a_servable_model(tmp_path):
    from mvi_node.commands.main import main
    from mvi_node.infer import ModelRegistry
    from mvi_node.synth import generate_ct

    manifest = generate_ct(tmp_path / "data", 4, seed=5, matrix=128, hard_cases="none")
    assert sorted(s["mvi"] for s in manifest["studies"]) == [False, False, True, True]
    out = tmp_path / "models" / "ct_ap_resnet18" / "9.9.9"
    rc = main(["train", "ct_ap_resnet18", "--cohort", str(tmp_path / "data"), "--out", str(out), "--seed", "1",
               "--epochs", "1", "--clinical-epochs", "1", "--max-steps", "1", "--version", "9.9.9"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model_image_only.onnx", "manifest.toml", "MODEL_CARD.md"}
    model = ModelRegistry([tmp_path / "models"]).get("ct_ap_resnet18")
    assert model.version == "9.9.9" and set(model.variants) == {"clinical", "image_only"}
    assert model.raw["training"]["patients_train"] == 2 and model.raw["training"]["patients_validation"] == 2
    cohort = model.raw["cohort"]  # the synth folder read as a cohort, through the serving path
    assert (cohort["kind"], cohort["rows"], cohort["usable_rows"], cohort["prevalence"]) == ("synth", 4, 4, 0.5)
    assert model.raw["synthetic"] is True
    assert "not for clinical use" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    for v in model.raw["variants"].values():  # calibration beside the discrimination metrics
        val = v["metrics"]["validation"]
        assert "note" in val or {"auc", "brier", "ece", "calibration_intercept", "calibration_slope"} <= set(val)
