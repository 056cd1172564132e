"""SADM (vpcli/predictors/sadm.py) and its layers: the grouped ConvLSTM against per-class cells, the
partial convolution against its definition, eq. 7's boundary weights, both dis-occlusion criteria
on a scene whose dis-occlusion is known, the class-group mapping, training lowering each stage's
loss, `vpcli train` then `vpcli predict` end to end. Tiny models, one thread, seconds.
"""
from __future__ import annotations

import pytest
import torch
from stage_util import fresh_state, train_stage
from test_predict import run

from vpcli.errors import InputError
from vpcli.nn.convlstm import ConvLSTMCell, GroupedConvLSTMCell
from vpcli.nn.partial_conv import PartialConv2d
from vpcli.predictors.sadm import (
    SADM,
    SADMConfig,
    boundary_weight,
    occupancy_disocclusion,
    semantic_disocclusion,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

GROUPS = [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 0, 3, 3, 3, 3, 3, 3, 3, 3]
TINY = dict(class_groups=GROUPS, context=3, stem_width=4, hidden=4, mlp_hidden=8, fusion_width=8, inpaint_width=8,
            inpaint_depth=2, disc_width=4, disc_layers=2)


def tiny(**kw) -> SADM:
    torch.manual_seed(0)
    return SADM(SADMConfig(**{**TINY, **kw}))


state = fresh_state


def moving_block(b=2, t=6, size=16):
    """A block of class 13 (car) moving right 1 px per frame over road (0); exact forward flow."""
    lab = torch.zeros(b, t, size, size, dtype=torch.long)
    flow = torch.zeros(b, t - 1, 2, size, size)
    for i in range(b):
        y = 3 + 2 * i
        for j in range(t):
            lab[i, j, y:y + 5, 2 + j:7 + j] = 13
            if j < t - 1:
                flow[i, j, 0, y:y + 5, 2 + j:7 + j] = 1.0
    rgb = torch.where(lab[:, :, None] == 13, 0.8, 0.2).expand(-1, -1, 3, -1, -1).contiguous()
    return {"rgb": rgb, "labels": lab, "flow": flow}


# ----------------------------------------------------------------------------- layers


def test_grouped_convlstm_equals_one_cell_per_group():
    torch.manual_seed(0)
    g, cin, hid = 3, 2, 4
    grouped = GroupedConvLSTMCell(g, cin, hid)
    cells = [ConvLSTMCell(cin, hid) for _ in range(g)]
    w = grouped.gates.weight.view(g, 4 * hid, cin + hid, 3, 3)
    bias = grouped.gates.bias.view(g, 4 * hid)
    for k, cell in enumerate(cells):
        cell.gates.weight.data.copy_(w[k])
        cell.gates.bias.data.copy_(bias[k])
    x = torch.randn(2, g * cin, 5, 6)
    h0, c0 = torch.randn(2, g * hid, 5, 6), torch.randn(2, g * hid, 5, 6)
    h, (_, c) = grouped(x, (h0, c0))
    for k, cell in enumerate(cells):
        sl_x, sl_h = slice(k * cin, (k + 1) * cin), slice(k * hid, (k + 1) * hid)
        hk, (_, ck) = cell(x[:, sl_x], (h0[:, sl_h], c0[:, sl_h]))
        torch.testing.assert_close(h[:, sl_h], hk, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(c[:, sl_h], ck, atol=1e-6, rtol=1e-5)


def test_partial_conv_renormalises_over_valid_pixels_and_updates_the_mask():
    torch.manual_seed(0)
    conv = PartialConv2d(1, 1, 3, 1, 1)
    x = torch.ones(1, 1, 6, 6)
    full = torch.ones(1, 1, 6, 6)
    out, m = conv(x, full)
    # the zero padding counts as invalid: border windows are re-normalised by 9 / (valid taps)
    count = torch.nn.functional.conv2d(full, torch.ones(1, 1, 3, 3), padding=1)
    want = torch.nn.functional.conv2d(x, conv.weight, padding=1) * 9 / count + conv.bias
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert m.all()
    hole = full.clone()
    hole[..., :, :3] = 0                                   # left half invalid
    out, m = conv(x * 7, hole)                             # values under the hole must not matter
    out2, _ = conv(x, hole)
    # a window entirely inside the hole: output 0 and still invalid
    assert out[0, 0, 2, 0] == 0 and m[0, 0, 2, 0] == 0 and m[0, 0, 2, 1] == 0
    # a window with 3 valid columns of ones -> sum of the weights on them, times 9/3 (re-normalised), + bias
    wsum = conv.weight[0, 0, :, 2].sum() * 9 / 3
    torch.testing.assert_close(out2[0, 0, 2, 2], wsum + conv.bias[0], atol=1e-5, rtol=1e-5)
    assert m[0, 0, 2, 2] == 1


def test_boundary_weight_is_one_inside_regions_and_peaks_at_edges():
    flat = torch.zeros(1, 20, 20, dtype=torch.long)
    torch.testing.assert_close(boundary_weight(flat, 5.0, 9.0), torch.ones(1, 20, 20))
    edge = flat.clone()
    edge[..., 10:] = 3
    w = boundary_weight(edge, 5.0, 9.0)[0, 10]
    assert float(w.max()) > 1.5 and int(w.argmax()) in (9, 10)
    assert float(w[0]) < float(w[5]) < float(w[9])          # decays away from the edge
    assert float(w.max()) <= 6.0


def test_occupancy_and_semantic_criteria_find_the_revealed_background():
    """A block moves 4 px right: frame t+1's background at the block's old place is revealed."""
    h, w = 8, 24
    back = torch.zeros(1, 2, h, w)
    back[0, 0, :, 12:16] = -4.0                             # block pixels of t+1 come from 8..11 of t
    occ = occupancy_disocclusion(back, 1.5)[0]
    want = torch.zeros(h, w, dtype=torch.bool)
    want[:, 8:12] = True
    assert torch.equal(occ, want)
    lab_t = torch.zeros(1, h, w, dtype=torch.long)
    lab_t[..., 8:12] = 13
    lab_t1 = torch.zeros(1, h, w, dtype=torch.long)
    lab_t1[..., 12:16] = 13
    sem = semantic_disocclusion(back, lab_t1, lab_t)[0]
    assert torch.equal(sem, want)
    # a wrong flow (zero): occupancy misses it, semantic consistency still finds it (Fig. 4)
    zero = torch.zeros(1, 2, h, w)
    assert not occupancy_disocclusion(zero, 1.5).any()
    assert semantic_disocclusion(zero, lab_t1, lab_t)[0][:, 8:12].all()
    # an ignore label in the previous map says nothing: not dis-occluded by semantics
    unknown = lab_t.clone()
    unknown[..., 8:12] = 255
    assert not semantic_disocclusion(back, lab_t1, unknown)[0][:, 8:12].any()
    # content from outside the frame is dis-occluded
    pan = torch.full((1, 2, h, w), 0.0)
    pan[0, 0] = 3.0
    assert occupancy_disocclusion(pan, 1.5)[0][:, -3:].all() and not occupancy_disocclusion(pan, 1.5)[0][:, :-3].any()


def test_class_groups_map_ids_and_write_the_smallest_id_of_each_group():
    m = tiny()
    assert m.dynamics.k == 4
    ids = torch.tensor([[[0, 1, 2, 10], [13, 18, 8, 255]]])
    assert m._groups(ids).tolist() == [[[0, 0, 1, 0], [3, 3, 2, 255]]]
    assert m.to_label[torch.tensor([0, 1, 2, 3])].tolist() == [0, 2, 8, 11]
    assert m.scored_labels(ids).tolist() == [[[0, 0, 2, 0], [11, 11, 8, 255]]]   # what eval compares with
    with pytest.raises(InputError, match=r"class ids \[19\] outside this model's 19 classes"):
        m._groups(torch.tensor([[[19]]]))
    with pytest.raises(ValueError, match="class_groups must give a group"):
        SADMConfig(class_groups=[0, 1])
    single = tiny(class_groups=[0] * 19)                   # the C = 1 ablation builds and predicts
    ctx = moving_block(t=3)
    rec = next(single.eval().predict({"rgb": ctx["rgb"], "labels": ctx["labels"], "flow": ctx["flow"]}, 1))
    assert rec.labels.unique().tolist() == [0]


# ----------------------------------------------------------------------------- training


def test_dynamics_training_lowers_flow_and_label_losses_and_leaves_inpaint_alone():
    m = tiny()
    batch = moving_block(b=4, t=6)
    frozen = {k: v.clone() for k, v in m.inpaint.state_dict().items()}
    hist = train_stage(m, "dynamics", batch, 60, lr=1e-2)
    first, last = hist[0]["dynamics"], hist[-1]["dynamics"]
    # L1 on a flow that is zero on 90% of the pixels first learns where the block is (the flow
    # error rises, then falls below the zero prediction's)
    assert last["ce"] < 0.3 * first["ce"] and last["flow_l1"] < 0.8 * first["flow_l1"], (first, last)
    assert all(torch.equal(frozen[k], v) for k, v in m.inpaint.state_dict().items())


def test_single_class_baseline_uses_ordinary_convs_over_the_concatenation_and_trains():
    """Sec. 4.3's "single class": the same layers with ordinary convolutions over [masks, flow],
    one flow head (no eq. 5 fusion of per-class flows); O(K^2) parameters against SADM's O(K)."""
    sadm, base = tiny(), tiny(single_class=True)
    assert sadm.dynamics.encoder.gates.groups == 4 and base.dynamics.encoder.gates.groups == 1
    assert base.dynamics.flow_head.out_channels == 2 and sadm.dynamics.flow_head.out_channels == 8
    n = [sum(p.numel() for p in m.dynamics.parameters()) for m in (sadm, base)]
    assert n[1] > 2 * n[0], n
    batch = moving_block(b=4, t=6)
    x = base.dynamics.inputs(torch.zeros(1, 16, 16, dtype=torch.long), torch.ones(1, 2, 16, 16))
    assert x.shape == (1, 4 + 2, 16, 16) and torch.equal(x[0, 0], torch.ones(16, 16))   # [one-hot, flow / scale]
    hist = train_stage(base, "dynamics", batch, 150, lr=1e-2)   # slower than SADM to place the block
    first, last = hist[0]["dynamics"], hist[-1]["dynamics"]
    assert last["ce"] < 0.3 * first["ce"] and last["flow_l1"] < 0.8 * first["flow_l1"], (first, last)


def test_inpaint_training_lowers_the_frame_error_with_dynamics_frozen():
    m = tiny()
    batch = moving_block(b=4, t=6)
    frozen = {k: v.clone() for k, v in m.dynamics.state_dict().items()}
    hist = train_stage(m, "inpaint", batch, 30, lr=3e-3)
    assert hist[-1]["inpaint"]["l1"] < 0.7 * hist[0]["inpaint"]["l1"]
    assert {"d_frame", "d_video"} <= set(hist[0]["d"])
    assert all(torch.equal(frozen[k], v) for k, v in m.dynamics.state_dict().items())


def test_the_stochastic_extension_is_training_only_and_seeded():
    m = tiny().eval()
    assert "posterior" in m.training_only and not any(k.startswith("posterior.") for k in m.inference_state_dict())
    b = moving_block(t=3)
    ctx = {"rgb": b["rgb"], "labels": b["labels"], "flow": b["flow"]}
    a = [r.frames for r in m.predict(ctx, 3, 2, torch.Generator().manual_seed(3))]
    again = [r.frames for r in m.predict(ctx, 3, 2, torch.Generator().manual_seed(3))]
    assert all(torch.equal(x, y) for x, y in zip(a, again))
    with pytest.raises(InputError, match="needs the context's flow"):
        next(m.predict({"rgb": b["rgb"], "labels": b["labels"]}, 1))


def test_dynamics_alone_predicts_what_the_pipeline_writes_and_layouts_survive_a_reload(tmp_path):
    """predict_dynamics is the pipeline's dynamics (same labels for the same seed); the convs but
    the ConvLSTM gates are stored channels-last (speed), and a save / load round trip reproduces
    the predictions exactly."""
    from vpcli.engine.trainer import load_weights, save_weights
    m = tiny().eval()
    assert m.dynamics.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert m.dynamics.encoder.gates.weight.is_contiguous()
    b = moving_block(t=4)
    ctx = {"rgb": b["rgb"], "labels": b["labels"], "flow": b["flow"]}
    recs = list(m.predict(ctx, 3, 2, torch.Generator().manual_seed(5)))
    dyn = list(m.predict_dynamics(m._groups(b["labels"]), b["flow"], 3, 2, torch.Generator().manual_seed(5)))
    for r, (g, _) in zip(recs, dyn):
        assert torch.equal(r.labels.flatten(0, 1), m.to_label[g])
    save_weights(m, tmp_path / "w.safetensors")
    again = tiny().eval()
    torch.nn.init.normal_(again.dynamics.stem[0].weight)
    load_weights(again, tmp_path / "w.safetensors")
    assert again.dynamics.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    recs2 = list(again.predict(ctx, 3, 2, torch.Generator().manual_seed(5)))
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(recs, recs2))


def test_copy_last_labels_predicts_a_still_scene_the_floor_of_the_flow_error():
    from vpcli.metrics import EPE
    from vpcli.predictors.baselines import CopyLastLabels, CopyLastLabelsConfig
    b = moving_block(t=4)
    rec = next(CopyLastLabels(CopyLastLabelsConfig()).predict({"rgb": b["rgb"], "labels": b["labels"]}, 2, 3))
    assert rec.flow.shape == (2, 3, 2, 16, 16) and not rec.flow.any()
    # EPE of zero flow against the block's 1 px/frame motion: 1 px on the block's 25 pixels
    err = EPE()(rec.flow[:, :1], b["flow"][:, -1:])
    assert torch.allclose(err, torch.full_like(err, 25 / 256))


def test_copy_last_labels_with_class_groups_writes_and_scores_each_group_as_its_smallest_id():
    from vpcli.predictors.baselines import CopyLastLabels, CopyLastLabelsConfig
    labels = torch.tensor([[[[0, 1, 2, 255]]]])                       # (B=1, T=1, H=1, W=4)
    rgb = torch.zeros(1, 1, 3, 1, 4)
    model = CopyLastLabels(CopyLastLabelsConfig(num_classes=3, class_groups=[0, 0, 1]))
    rec = next(model.predict({"rgb": rgb, "labels": labels}, 1, 1))
    assert rec.labels.flatten().tolist() == [0, 0, 2, 255]
    assert model.scored_labels(labels[0, 0]).flatten().tolist() == [0, 0, 2, 255]
    plain = CopyLastLabels(CopyLastLabelsConfig(num_classes=3))
    assert torch.equal(plain.scored_labels(labels), labels)
    with pytest.raises(ValueError, match="class_groups must use every group"):
        CopyLastLabelsConfig(num_classes=3, class_groups=[0, 0, 2])


# ----------------------------------------------------------------------------- CLI


def test_train_both_stages_then_predict_streams_frames_labels_flow_and_masks(tmp_path, capsys):
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence, write_sequence

    code, _, err = run(capsys, "train", "--config", "sadm-street-tiny", "--out", tmp_path / "run", "--threads", "1")
    assert code == 0, err
    clip = tmp_path / "clip"
    write_sequence(clip, render_sequence(SynthStreetConfig(height=32, width=32, length=5), 2))
    code, _, err = run(capsys, "predict", clip, "--weights", tmp_path / "run", "--horizon", "4", "--samples", "2",
                    "--out", tmp_path / "pred", "--flow-from", "dis", "--labels-from", "companion",
                    "--save-components")
    assert code == 0, err
    res = tmp_path / "pred" / "clip"
    names = {p.name for p in res.iterdir()}
    assert {"sample_000.mp4", "sample_001.labels", "sample_000.flow", "disocclusion_sample_000.mp4",
            "frames_labels_sample_000.mp4", "flow_sample_001.mp4"} <= names, names
    assert len(list((res / "sample_000.flow").glob("*.flo"))) == 4
    # scripts/sadm_disocclusion.py on the same run and sequence: the union of the two criteria
    # marks at least what each marks, and with exact flow it finds some of the true dis-occlusion
    import importlib.util
    import json
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "sadm_disocclusion", Path(__file__).resolve().parent.parent / "scripts" / "sadm_disocclusion.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--weights", str(tmp_path / "run"), "--data", str(tmp_path), "--out",
                        str(tmp_path / "d.json")]) == 0
    r = json.loads((tmp_path / "d.json").read_text())["results"]
    for mode in ("predicted", "exact"):
        assert r[f"{mode}/both"]["marked"] >= max(r[f"{mode}/occupancy"]["marked"], r[f"{mode}/semantic"]["marked"])
        assert r[f"{mode}/both"]["recall"] >= max(r[f"{mode}/occupancy"]["recall"], r[f"{mode}/semantic"]["recall"])
    assert r["exact/both"]["gt_fraction"] > 0 and r["exact/both"]["recall"] > 0
