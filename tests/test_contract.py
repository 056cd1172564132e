"""The Predictor / Trainable contract, for every registered predictor and for toy methods that use
what no shipped method uses yet: two adversarial steps through the iteration cache, two parts
trained in two stages with the first frozen, training-only modules, label outputs, flow inputs.

Every registered predictor: builds from its tiny preset, trains one iteration of every stage and
step, saves and reloads an inference checkpoint without training-only modules, and predicts a few
steps with S = 3 samples whose records carry the declared kinds and shapes; the same seed gives the
same output.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ddp_util import free_port, join_env
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from vpcli import registry
from vpcli.engine.run import PRESET_DIR, resolve_config
from vpcli.engine.trainer import OptimConfig, TrainConfig, Trainer, TrainingError, load_weights, save_weights
from vpcli.predictors.base import ContractError, Predictor, Stage, StepRecord, TrainStep, check_record
from vpcli.trainable import IterationCache

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# ----------------------------------------------------------------------------- data


class Squares(torch.utils.data.Dataset):
    """A bright square moving one pixel per frame; labels: 1 on the square, 0 elsewhere."""

    def __init__(self, n=8, t=4, size=16, labels=True):
        self.n, self.t, self.size, self.labels = n, t, size, labels

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randint(2, self.size - 8, (2,), generator=g).tolist()
        rgb = torch.full((self.t, 1, self.size, self.size), 0.1)
        for k in range(self.t):
            rgb[k, 0, y:y + 4, x + k:x + k + 4] = 0.9
        item = {"rgb": rgb}
        if self.labels:
            item["labels"] = (rgb[:, 0] > 0.5).long()  # (T, H, W)
        return item


# ----------------------------------------------------------------------------- toy methods


@dataclass
class ToyConfig:
    channels: int = 1
    context: int = 2
    width: int = 4
    num_classes: int = 2


class ToyGAN(Predictor):
    """G predicts the next frame; D (training-only) tells real next frames from G's. The G step
    puts its fake frames in the iteration cache, the D step reads them (LSGAN)."""

    name = "test-toy-gan"
    training_only = ("disc",)
    cache_keys = {"fake": "G's one-step predictions (B*(T-1), C, H, W), detached for D"}
    validation_metric = ("mse", "min")

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        c, w = config.channels, config.width
        self.gen = nn.Conv2d(c, c, 3, padding=1)
        self.disc = nn.Sequential(nn.Conv2d(c, w, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 1, 3, padding=1))

    def _next(self, x):
        return torch.sigmoid(self.gen(x) + 4 * (x - 0.5))

    def train_steps(self):
        return [TrainStep("g", lambda: self.module_parameters("gen"), self.g_loss),
                TrainStep("d", lambda: self.module_parameters("disc"), self.d_loss)]

    def g_loss(self, batch, state):
        x = batch["rgb"]
        prev, nxt = x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1)  # (B*(T-1), C, H, W)
        fake = self._next(prev)
        state.cache.put("fake", fake.detach())
        adv = ((self.disc(fake) - 1) ** 2).mean()
        mse = F.mse_loss(fake, nxt)
        return {"loss": mse + 0.01 * adv, "mse": mse, "adv": adv}

    def d_loss(self, batch, state):
        fake, real = state.cache.get("fake"), batch["rgb"][:, 1:].flatten(0, 1)
        return {"loss": ((self.disc(real) - 1) ** 2).mean() + (self.disc(fake) ** 2).mean()}

    @torch.no_grad()
    def predict(self, context, horizon, samples=1, generator=None, *, want_extras=False):
        x = context["rgb"][:, -1]
        for _ in range(horizon):
            x = self._next(x)
            yield StepRecord(frames=x[:, None].expand(-1, samples, -1, -1, -1))


class ToyTwoStage(Predictor):
    """Two parts: ``structure`` predicts the next label map, ``image`` renders a frame from the
    labels and the last frame. Stage ``structure`` trains the first; stage ``image`` trains the
    second (with a training-only critic) while ``structure`` is frozen."""

    name = "test-toy-two-stage"
    inputs = frozenset({"rgb", "labels"})
    outputs = frozenset({"frames", "labels", "probs"})
    parts = {"structure": ("structure",), "image": ("image",)}
    training_only = ("critic",)

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        k, c = config.num_classes, config.channels
        self.structure = nn.Sequential(nn.Conv2d(k, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.Conv2d(8, k, 3, padding=1))
        self.image = nn.Conv2d(k + c, c, 3, padding=1)
        self.critic = nn.Conv2d(c, 1, 3, padding=1)

    def _onehot(self, labels):  # (N, H, W) -> (N, K, H, W)
        return F.one_hot(labels, self.config.num_classes).permute(0, 3, 1, 2).float()

    def training_plan(self):
        return [Stage("structure", (TrainStep("structure", lambda: self.part_parameters("structure"), self.s_loss),)),
                Stage("image", (TrainStep("image", lambda: self.part_parameters("image"), self.i_loss),
                                TrainStep("critic", lambda: self.module_parameters("critic"), self.c_loss)),
                      frozen=("structure",))]

    def s_loss(self, batch, state):
        lab = batch["labels"]  # (B, T, H, W)
        logits = self.structure(self._onehot(lab[:, :-1].flatten(0, 1)))
        ce = F.cross_entropy(logits, lab[:, 1:].flatten(0, 1))
        return {"loss": ce}

    def _render(self, labels, last):
        return torch.sigmoid(self.image(torch.cat([self._onehot(labels), last], 1)))

    def i_loss(self, batch, state):
        x, lab = batch["rgb"], batch["labels"]
        out = self._render(lab[:, 1:].flatten(0, 1), x[:, :-1].flatten(0, 1))
        return {"loss": F.mse_loss(out, x[:, 1:].flatten(0, 1)) + 1e-3 * self.critic(out).mean() ** 2}

    def c_loss(self, batch, state):
        return {"loss": (self.critic(batch["rgb"][:, 1:].flatten(0, 1)) ** 2).mean()}

    @torch.no_grad()
    def predict(self, context, horizon, samples=1, generator=None, *, want_extras=False):
        lab, x = context["labels"][:, -1], context["rgb"][:, -1]
        for _ in range(horizon):
            probs = self.structure(self._onehot(lab)).softmax(1)
            lab = probs.argmax(1)  # argmax-discretised, fed back
            x = self._render(lab, x)
            yield StepRecord(frames=x[:, None].expand(-1, samples, -1, -1, -1),
                             labels=lab[:, None].expand(-1, samples, -1, -1),
                             probs=probs[:, None].expand(-1, samples, -1, -1, -1))


class ToyFlowWarp(Predictor):
    """Parameter-free: reads flow, predicts the next frame by moving the last one along the last
    context flow (nearest pixel), and reports that flow as its predicted flow."""

    name = "test-toy-flow"
    inputs = frozenset({"rgb", "flow"})
    outputs = frozenset({"frames", "flow"})

    def training_plan(self):
        return []

    @torch.no_grad()
    def predict(self, context, horizon, samples=1, generator=None, *, want_extras=False):
        from vpcli.nn.warp import backward_warp
        x, f = context["rgb"][:, -1], context["flow"][:, -1]  # (B, C, H, W), (B, 2, H, W)
        for _ in range(horizon):
            x = backward_warp(x, -f)  # forward motion approximated by backward warping with -f
            yield StepRecord(frames=x[:, None].expand(-1, samples, -1, -1, -1),
                             flow=f[:, None].expand(-1, samples, -1, -1, -1))


TOYS = {cls.name: cls for cls in (ToyGAN, ToyTwoStage, ToyFlowWarp)}


@pytest.fixture
def toys(monkeypatch):
    """Register the toy methods for one test only, so the registry-wide tests never see them."""
    registry.ensure_loaded("predictor")
    for name, cls in TOYS.items():
        monkeypatch.setitem(registry._REGISTRY["predictor"], name,
                            registry.Entry("predictor", name, cls, ToyConfig, "test only"))
    return TOYS


def toy_trainer(model, run_dir, steps=4, **kw):
    cfg = TrainConfig(steps=steps, batch_size=4, optim=OptimConfig(lr=1e-2), log_every=1, **kw)
    return Trainer(model, Squares(), cfg, run_dir, context_frames=2)


def records(run_dir: Path, event: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["event"] == event]


# ----------------------------------------------------------------------------- every registered predictor


def _tiny_preset(method: str) -> str | None:
    for path in sorted(PRESET_DIR.glob("*-tiny.yaml")):
        if yaml.safe_load(path.read_text()).get("method") == method:
            return path.stem
    return None


def _predictor_names() -> list[str]:
    registry.ensure_loaded("predictor")
    return sorted(n for n in registry._REGISTRY["predictor"] if not n.startswith("test-"))


@pytest.mark.parametrize("method", _predictor_names())
def test_every_registered_predictor_keeps_the_contract(method, tmp_path):
    from vpcli.data.clips import make_dataset
    entry = registry.get("predictor", method)
    preset = _tiny_preset(method)
    cfg = resolve_config(method, preset, ["data.train_clips=4", "data.val_clips=2", "train.batch_size=2",
                                          "data.future=2"] if preset else [])
    torch.manual_seed(0)
    model = entry.builder(cfg.model_config())
    assert isinstance(model, Predictor) and model.name == method
    assert set(model.inputs | model.training_inputs) <= {"rgb", "labels", "flow"} and model.outputs <= {"frames", "labels", "probs", "flow"}
    plan = model.training_plan()
    if plan:
        assert preset is not None, f"{method} trains but ships no tiny preset (<method>-<data>-tiny.yaml)"
        d = cfg.data
        wanted = tuple(k for k in ("labels", "flow") if k in model.inputs | model.training_inputs)
        ds = make_dataset(d.source, split="train", context=d.context, future=d.future, size=tuple(d.size),
                          channels=d.channels, num_clips=4, seed=0, **({"companions": wanted} if wanted else {}))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        tcfg = TrainConfig(steps=1, batch_size=2, log_every=1)
        summary = Trainer(model, ds, tcfg, tmp_path / "run", context_frames=d.context).fit()
        assert summary["completed_stages"] == [s.name for s in plan]
        logged = {k for r in records(tmp_path / "run") for k in r}
        for st in plan:  # every step of every stage ran and changed its parameters
            for s in st.steps:
                assert ("loss" if len(st.steps) == 1 else f"{s.name}/loss") in logged
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # inference checkpoint: no training-only modules, and it loads into a fresh model
    save_weights(model, tmp_path / "w.safetensors")
    saved = load_file(str(tmp_path / "w.safetensors"))
    assert not any(k.split(".")[0] in model.training_only for k in saved)
    fresh = entry.builder(cfg.model_config())
    load_weights(fresh, tmp_path / "w.safetensors")
    model.eval(), fresh.eval()
    c, (h, w) = cfg.data.context, cfg.data.size
    g = torch.Generator().manual_seed(0)
    ctx = {"rgb": torch.rand(2, c, cfg.data.channels, h, w, generator=g)}
    if "labels" in model.inputs:
        ctx["labels"] = torch.randint(0, model.label_classes() or 19, (2, c, h, w), generator=g)
    if "flow" in model.inputs:
        ctx["flow"] = torch.randn(2, c - 1, 2, h, w, generator=g)

    def run(m, extras=False):
        out = []
        for t, rec in enumerate(m.predict(ctx, 3, 3, torch.Generator().manual_seed(5), want_extras=extras)):
            check_record(rec, m, t, batch=2, samples=3, size=(h, w), channels=cfg.data.channels, want_extras=extras)
            out.append(rec)
        assert len(out) == 3
        return out
    a, b, again = run(model), run(fresh), run(model, extras=bool(model.extras))
    for ra, rb, rc in zip(a, b, again):
        for kind in model.outputs:
            torch.testing.assert_close(ra.get(kind), rb.get(kind), rtol=0, atol=0)  # reloaded = same
            torch.testing.assert_close(ra.get(kind), rc.get(kind), rtol=0, atol=0)  # extras change nothing


def test_check_record_names_what_breaks_the_contract():
    model = ToyGAN(ToyConfig())
    with pytest.raises(ContractError, match=r"yielded a Tensor at step 2, not a StepRecord"):
        check_record(torch.zeros(1, 1, 1, 4, 4), model, 2, batch=1, samples=1, size=(4, 4), channels=1,
                     want_extras=False)
    with pytest.raises(ContractError, match=r"yielded frames of shape \(1, 2, 1, 4, 4\) at step 0; expected "
                                            r"\(1, 1, 1, 4, 4\)"):
        check_record(StepRecord(frames=torch.zeros(1, 2, 1, 4, 4)), model, 0, batch=1, samples=1, size=(4, 4),
                     channels=1, want_extras=False)
    with pytest.raises(ContractError, match=r"yielded \['frames', 'labels'\] at step 0 but declares outputs"):
        check_record(StepRecord(frames=torch.zeros(1, 1, 1, 4, 4), labels=torch.zeros(1, 1, 4, 4).long()), model,
                     0, batch=1, samples=1, size=(4, 4), channels=1, want_extras=False)


# ----------------------------------------------------------------------------- adversarial steps


def test_two_adversarial_steps_train_through_the_iteration_cache(tmp_path):
    torch.manual_seed(0)
    model = ToyGAN(ToyConfig())
    d0 = {k: v.clone() for k, v in model.disc.state_dict().items()}
    tr = toy_trainer(model, tmp_path, steps=40, per_step={"d": {"optim": {"lr": 1e-3}, "every": 2}})
    assert tr.optimizers["d"].param_groups[0]["lr"] == 1e-3 and tr.optimizers["g"].param_groups[0]["lr"] == 1e-2
    tr.fit()
    logs = records(tmp_path)
    assert [("d/loss" in r) for r in logs[:4]] == [True, False, True, False]  # d every 2nd iteration
    g = [r["g/mse"] for r in logs]
    assert np.mean(g[-5:]) < 0.7 * np.mean(g[:5]), g  # G learns
    assert any(not torch.equal(d0[k], v) for k, v in model.disc.state_dict().items())  # D trained
    # inference weights leave out the discriminator; the training checkpoint keeps it
    assert not any(k.startswith("disc.") for k in load_file(tmp_path / "checkpoints/last.safetensors"))
    [folder] = [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    assert any(k.startswith("disc.") for k in load_file(folder / "model.safetensors"))
    # best checkpoint chosen by the metric the method names
    assert tr.best_metric == "val/mse" and tr.best_mode == "min"


def test_the_cache_refuses_undeclared_and_unproduced_keys():
    cache = IterationCache({"fake": "G's frames"})
    with pytest.raises(ContractError, match=r"'fak' is not declared in cache_keys \(hint: did you mean 'fake'"):
        cache.put("fak", 1)
    with pytest.raises(ContractError, match=r"'fake' was read before any step of this iteration put it"):
        cache.get("fake")
    cache.put("fake", 2)
    assert cache.get("fake") == 2
    cache.clear()
    assert "fake" not in cache


def test_step_and_stage_names_in_the_config_are_checked():
    from vpcli.errors import ConfigError
    with pytest.raises(ConfigError, match=r"train.per_step.gg: test-toy-gan has no training step 'gg' "
                                          r"\(hint: did you mean 'g'"):
        toy_trainer(ToyGAN(ToyConfig()), "/nonexistent", per_step={"gg": {"every": 2}})
    with pytest.raises(ConfigError, match=r"train.stage_steps.imag: .* has no stage 'imag' \(hint: did you mean 'image'"):
        toy_trainer(ToyTwoStage(ToyConfig()), "/nonexistent", stage_steps={"imag": 3})


def _gan_worker(rank, world, port, run_dir):
    join_env(rank, world, port)
    torch.manual_seed(0)
    tr = toy_trainer(ToyGAN(ToyConfig()), run_dir, steps=6)
    assert all(isinstance(m, torch.nn.parallel.DistributedDataParallel) for m in tr.step_modules.values())
    tr.fit()
    from vpcli.engine.distributed import shutdown
    shutdown(tr.info)


def test_two_process_adversarial_training_equals_one_process(tmp_path):
    torch.manual_seed(0)
    toy_trainer(ToyGAN(ToyConfig()), tmp_path / "one", steps=6).fit()
    torch.multiprocessing.spawn(_gan_worker, args=(2, free_port(), tmp_path / "two"), nprocs=2, join=True)
    [f1] = [p for p in (tmp_path / "one/checkpoints").iterdir() if p.is_dir()]
    [f2] = [p for p in (tmp_path / "two/checkpoints").iterdir() if p.is_dir()]
    a, b = load_file(f1 / "model.safetensors"), load_file(f2 / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("disc.") for k in a)
    for k in a:  # G and D, each reduced by its own step's DDP
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- parts and stages


def test_two_parts_in_two_stages_with_the_first_frozen(tmp_path):
    torch.manual_seed(0)
    model = ToyTwoStage(ToyConfig())
    tr = toy_trainer(model, tmp_path, steps=30, stage_steps={"image": 20})
    seen = {}

    def spy(event, rec):
        if event == "train" and tr.stage.name == "image" and "frozen" not in seen:
            seen["frozen"] = (all(not p.requires_grad for p in model.part_parameters("structure")),
                              not model.structure.training, model.image.training,
                              {id(p) for o in tr.optimizers.values() for g in o.param_groups for p in g["params"]}
                              .isdisjoint({id(p) for p in model.part_parameters("structure")}))
    tr.callback = spy
    s1 = {}
    real = tr._begin_stage

    def begin(name):  # snapshot the structure part when stage 2 begins
        s1.update({k: v.clone() for k, v in model.structure.state_dict().items()})
        real(name)
    tr._begin_stage = begin
    summary = tr.fit()
    assert summary["completed_stages"] == ["structure", "image"]
    assert seen["frozen"] == (True, True, True, True)  # no grads, eval mode (BatchNorm), no optimiser
    for k, v in model.structure.state_dict().items():  # stage 2 left it exactly as stage 1 did
        assert torch.equal(v, s1[k]), k
    logs = records(tmp_path)
    s_loss = [r["loss"] for r in logs if r["stage"] == "structure"]
    i_loss = [r["image/loss"] for r in logs if r["stage"] == "image"]
    assert len(s_loss) == 30 and len(i_loss) == 20
    assert s_loss[-1] < 0.5 * s_loss[0] and i_loss[-1] < i_loss[0]
    assert json.loads((tmp_path / "stages.json").read_text())["completed"] == ["structure", "image"]
    # parts save apart and load alone; the critic is in no inference file
    save_weights(model, tmp_path / "structure.safetensors", parts=["structure"])
    only = load_file(tmp_path / "structure.safetensors")
    assert only and all(k.startswith("structure.") for k in only)
    other = ToyTwoStage(ToyConfig())
    load_weights(other, tmp_path / "structure.safetensors", parts=["structure"])
    assert all(torch.equal(other.structure.state_dict()[k], v) for k, v in model.structure.state_dict().items())
    with pytest.raises(TrainingError, match="holds only the structure part of test-toy-two-stage; the image part is "
                                            r"missing .*--stage image --init structure="):
        load_weights(other, tmp_path / "structure.safetensors")  # all parts asked, one given


def test_one_stage_at_a_time_and_the_run_records_it(tmp_path):
    torch.manual_seed(0)
    tr = toy_trainer(ToyTwoStage(ToyConfig()), tmp_path, steps=3)
    assert tr.fit(stage="structure")["completed_stages"] == ["structure"]
    assert json.loads((tmp_path / "stages.json").read_text())["completed"] == ["structure"]
    with pytest.raises(TrainingError, match="stage 'structure' of .* is already complete"):
        toy_trainer(ToyTwoStage(ToyConfig()), tmp_path, steps=3).fit(resume=True, stage="structure")
    tr2 = toy_trainer(ToyTwoStage(ToyConfig()), tmp_path, steps=3)
    assert tr2.fit(resume=True, stage="image")["completed_stages"] == ["structure", "image"]


def test_cli_stage_and_init_one_part_from_another_run(capsys, tmp_path, toys):
    from test_predict import run
    base = ["--method", "test-toy-two-stage", "--data", "synthetic:synth-street", "--set", "data.size=[16,16]",
            "--set", "data.context=2", "--set", "data.future=1", "--set", "data.train_clips=4", "--set",
            "data.val_clips=0", "--set", "train.batch_size=2", "--set", "train.steps=2", "--set", "data.channels=1",
            "--set", "model.num_classes=19"]
    code, _, err = run(capsys, "train", *base, "--stage", "structure", "--out", tmp_path / "s1")
    assert code == 0, err
    code, _, err = run(capsys, "train", *base, "--stage", "imge", "--out", tmp_path / "bad")
    assert code != 0 and "has no training stage 'imge'" in err and "did you mean 'image'" in err
    assert not (tmp_path / "bad").exists()  # a failed start writes nothing
    code, _, err = run(capsys, "train", *base, "--stage", "image", "--init", f"structure={tmp_path / 's1'}",
                       "--out", tmp_path / "s2")
    assert code == 0, err
    a = load_file(tmp_path / "s1/checkpoints/last.safetensors")
    b = load_file(tmp_path / "s2/checkpoints/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("structure."))  # loaded, then frozen
    code, _, err = run(capsys, "train", *base, "--init", f"strcture={tmp_path / 's1'}", "--out", tmp_path / "bad")
    assert code == 2 and "has no part 'strcture'" in err and "did you mean 'structure'" in err
    # one part exported under a manifest name: the file holds that part only, --init NAME loads it alone
    code, out, err = run(capsys, "weights", "export", tmp_path / "s1", "--name", "toy-structure", "--part",
                         "structure", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert all(k.startswith("structure.") for k in load_file(rec["weights"]))
    entry = yaml.safe_load(open(rec["manifest"]))["weights"][0]
    assert entry["parts"] == ["structure"]
    os.environ["VPCLI_MANIFEST"] = rec["manifest"]
    try:
        code, _, err = run(capsys, "train", *base, "--stage", "image", "--init", "toy-structure", "--out",
                           tmp_path / "s3")
    finally:
        del os.environ["VPCLI_MANIFEST"]
    assert code == 0, err
    c = load_file(tmp_path / "s3/checkpoints/last.safetensors")
    assert all(torch.equal(a[k], c[k].float()) for k in a if k.startswith("structure."))
    code, _, err = run(capsys, "weights", "export", tmp_path / "s1", "--name", "x", "--part", "critic")
    assert code == 2 and "has no part 'critic'" in err


# ----------------------------------------------------------------------------- checkpoints


def test_a_kill_between_the_two_checkpoint_writes_keeps_the_last_whole_pair(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    torch.manual_seed(0)
    toy_trainer(ToyGAN(ToyConfig()), a, steps=6).fit()
    torch.manual_seed(0)
    tr = toy_trainer(ToyGAN(ToyConfig()), b, steps=6, checkpoint_every=2)
    real_save = torch.save

    def killed(obj, f, *args, **kw):  # the weights of step 4 are on disk, the state is not
        if isinstance(obj, dict) and obj.get("step") == 4:
            raise KeyboardInterrupt("killed between the two writes")
        return real_save(obj, f, *args, **kw)
    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    monkeypatch.setattr(torch, "save", real_save)
    folders = [p.name for p in (b / "checkpoints").iterdir() if p.is_dir()]
    assert folders == ["000001_train_step0000002"], folders  # the half-written step 4 never appeared
    torch.manual_seed(0)
    tr = toy_trainer(ToyGAN(ToyConfig()), b, steps=6, checkpoint_every=2)
    tr.fit(resume=True)
    fa = next(p for p in (a / "checkpoints").iterdir() if p.is_dir())
    fb = next(p for p in (b / "checkpoints").iterdir() if p.is_dir())
    wa, wb = load_file(fa / "model.safetensors"), load_file(fb / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # resumed from step 2 = uninterrupted


def test_an_inconsistent_pair_and_a_foreign_state_file_are_refused(tmp_path):
    torch.manual_seed(0)
    toy_trainer(ToyGAN(ToyConfig()), tmp_path, steps=2).fit()
    [folder] = [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    state = torch.load(folder / "state.pt", weights_only=True)
    state["step"] = 7
    torch.save(state, folder / "state.pt")
    with pytest.raises(TrainingError, match="holds step 2 but .* step 7: the checkpoint pair is inconsistent"):
        toy_trainer(ToyGAN(ToyConfig()), tmp_path, steps=4).fit(resume=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    real_save = torch.save
    real_save({"x": Evil()}, folder / "state.pt")
    with pytest.raises(TrainingError, match="is not a vpcli training state file; nothing was loaded"):
        toy_trainer(ToyGAN(ToyConfig()), tmp_path, steps=4).fit(resume=True)
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- inputs


@pytest.fixture
def moving_clip(tmp_path):
    """A lossless clip whose content moves 1 px right per frame, and its exact flow companion."""
    from vpcli.io.video import write_video
    rng = np.random.default_rng(0)
    base = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    frames = np.stack([np.roll(base, k, axis=1) for k in range(4)])[:, :, 4:36]  # (4, 24, 32, 3)
    path = tmp_path / "clip.mkv"
    write_video(path, frames, fps=5, lossless=True)
    return path


def test_a_method_that_reads_flow_gets_it_from_a_companion_or_a_named_estimator(capsys, tmp_path, toys, moving_clip):
    from test_predict import run
    code, _, err = run(capsys, "predict", moving_clip, "--method", "test-toy-flow", "--horizon", "2", "--context", "3",
                       "--out", tmp_path / "p")
    assert code == 1 and "test-toy-flow needs flow but" in err and "vpcli flow" in err and "--flow-from dis" in err
    assert not (tmp_path / "p" / "clip").exists()
    code, _, err = run(capsys, "predict", moving_clip, "--method", "test-toy-flow", "--horizon", "2", "--context", "3",
                       "--flow-from", "dis", "--samples", "2", "--out", tmp_path / "p")
    assert code == 0, err
    out = tmp_path / "p" / "clip"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["inputs"] == {"flow": "dis", "rgb": "given"} and meta["predicted"] == ["flow", "frames"]
    from vpcli.io.flow import read_flo
    flo = read_flo(out / "sample_001.flow" / "00001.flo")  # DIS on a 1 px shift: u ~ 1, v ~ 0 inside
    assert abs(float(np.median(flo[0])) - 1.0) < 0.2 and abs(float(np.median(flo[1]))) < 0.2
    assert (out / "flow_sample_000.mp4").exists() and (out / "sample_000.mp4").exists()
    # the same flow as a companion beside the clip: taken from there, named in meta.json
    np.savez(tmp_path / "clip.flow.npz", flow=np.stack([np.stack([np.full((24, 32), 1.0), np.zeros((24, 32))])] * 3)
             .astype(np.float32))
    code, _, err = run(capsys, "predict", moving_clip, "--method", "test-toy-flow", "--horizon", "1", "--context", "3",
                       "--out", tmp_path / "q")
    assert code == 0, err
    meta = json.loads((tmp_path / "q/clip/meta.json").read_text())
    assert meta["inputs"]["flow"].endswith("clip.flow.npz")
    assert np.allclose(read_flo(tmp_path / "q/clip/sample_000.flow/00000.flo")[0], 1.0)


def test_label_outputs_are_written_as_palette_pngs_and_a_video(capsys, tmp_path, toys, moving_clip):
    from test_predict import run

    from vpcli.engine.loading import load_predictor
    from vpcli.io.labels import read_label_png
    np.savez(tmp_path / "clip.labels.npz", labels=np.zeros((4, 24, 32), np.int64))
    torch.manual_seed(0)
    model = ToyTwoStage(ToyConfig(channels=3))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = resolve_config("test-toy-two-stage", None, ["data.context=2", "data.size=[24,32]", "model.channels=3"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_weights(model, run_dir / "checkpoints/last.safetensors")
    code, _, err = run(capsys, "predict", moving_clip, "--weights", run_dir, "--horizon", "3", "--samples", "2",
                       "--out", tmp_path / "p")
    assert code == 0, err
    out = tmp_path / "p" / "clip"
    loaded, _, _ = load_predictor(None, str(run_dir))
    ctx = {"rgb": torch.zeros(1, 2, 3, 24, 32), "labels": torch.zeros(1, 2, 24, 32, dtype=torch.long)}
    from vpcli.io.video import read_video
    rgb = torch.from_numpy(read_video(out / "context.mp4")[0].transpose(0, 3, 1, 2).copy()).float().div(255)[None]
    ctx["rgb"] = rgb
    want = [r.labels[0, 1].numpy() for r in loaded.predict(ctx, 3, 2)]
    got = [read_label_png(out / "sample_001.labels" / f"{t:05d}.png") for t in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert (out / "labels_sample_000.mp4").exists()
    probs = np.load(out / "sample_001.probs" / "00002.npy")
    assert probs.shape == (2, 24, 32) and probs.dtype == np.float16 and np.array_equal(probs.argmax(0), got[2])


def test_eval_scores_predicted_flow_with_epe_and_labels_with_miou(tmp_path, toys):
    """The evaluator scores what a record holds: EPE of predicted flow against the data's flow into
    each predicted frame, mIoU of predicted labels, checked against direct computations."""
    from vpcli.data.clips import make_dataset
    from vpcli.engine.evaluate import evaluate
    from vpcli.metrics.flow import epe
    r = evaluate(method="test-toy-flow", data="synthetic:synth-street", metric="epe,psnr", samples=2, context=3,
                 horizon=2, size="32x64", num_sequences=2, batch_size=2, out=tmp_path / "e", videos=False, plots=False)
    assert r["inputs"]["inputs_from"] == {"flow": "companion", "rgb": "given"}
    ds = make_dataset("synthetic:synth-street", split="test", context=3, future=2, size=(32, 64), channels=3,
                      num_clips=2, seed=0, companions=("labels", "flow"))
    per_seq = []
    for i in range(2):
        fl = ds[i]["flow"]  # (4, 2, H, W): flow[k] from frame k to k+1
        pred = fl[1][None, None].expand(1, 2, -1, -1, -1)  # the last context flow, for both steps
        per_seq.append(epe(pred, fl[2:4][None]).mean().item())  # steps 1, 2: flows into frames 3, 4
    assert r["metrics"]["epe"]["mean"] == pytest.approx(np.mean(per_seq), rel=1e-5)
    # a method without flow output cannot be scored with epe (a usage error, nothing written)
    from vpcli.errors import UsageError
    with pytest.raises(UsageError, match="epe scores predicted flow, and copy-last predicts frames"):
        evaluate(method="copy-last", data="synthetic:synth-street", metric="epe", out=tmp_path / "f")
    assert not (tmp_path / "f").exists()
    # labels: an untrained two-part model's argmax labels, scored by mIoU against the data's labels
    torch.manual_seed(0)
    model = ToyTwoStage(ToyConfig(channels=3, num_classes=19))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = resolve_config("test-toy-two-stage", None, ["data.context=3", "data.future=2", "data.size=[32,64]",
                                                      "model.channels=3", "model.num_classes=19",
                                                      "data.source=synthetic:synth-street"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_weights(model, run_dir / "checkpoints/last.safetensors")
    r = evaluate(weights=str(run_dir), metric="miou,psnr", samples=1, num_sequences=2, batch_size=2,
                 out=tmp_path / "g", videos=False, plots=False)
    from vpcli.metrics.segmentation import miou
    model.eval()
    vals = []
    for i in range(2):
        it = ds[i]
        with torch.no_grad():
            recs = list(model.predict({"rgb": it["rgb"][None, :3], "labels": it["labels"][None, :3]}, 2, 1))
        pred = torch.stack([rec.labels[:, 0] for rec in recs], 1)  # 1,T,H,W
        vals.append(float(miou(pred, it["labels"][None, 3:5], 19).nanmean()))
    assert r["metrics"]["miou"]["mean"] == pytest.approx(np.mean(vals), rel=1e-5)


def test_export_of_a_two_stage_run_records_its_stages_and_the_best_of_the_last_stage(capsys, tmp_path, toys):
    from test_predict import run
    base = ["--method", "test-toy-two-stage", "--data", "synthetic:synth-street", "--set", "data.size=[16,16]",
            "--set", "data.context=2", "--set", "data.future=1", "--set", "data.train_clips=4", "--set",
            "data.val_clips=2", "--set", "train.batch_size=2", "--set", "train.steps=2", "--set", "data.channels=1",
            "--set", "model.num_classes=19", "--set", "train.val_every=1"]
    code, _, err = run(capsys, "train", *base, "--out", tmp_path / "r")
    assert code == 0, err
    code, out, err = run(capsys, "weights", "export", tmp_path / "r", "--name", "toy", "--json")
    assert code == 0, err
    entry = yaml.safe_load(open(json.loads(out)["manifest"]))["weights"][0]
    assert "2 structure + 2 image steps" in entry["trained_on"]
    vals = [r for r in records(tmp_path / "r", "val") if r["stage"] == "image"]
    assert entry["metrics"]["val/loss"] == round(min(r["val/loss"] for r in vals), 6) and "stage" not in entry["metrics"]


def test_labels_computed_on_the_fly_by_a_named_segmenter(capsys, tmp_path, toys, moving_clip):
    """A method that reads labels, on a clip without label companions: an error naming the input and how
    to produce it, or --labels-from NAME runs that segmenter on the context frames (recorded in meta.json)."""
    from test_predict import run

    from vpcli.engine.segment_runner import load_segmenter
    torch.manual_seed(0)
    model = ToyTwoStage(ToyConfig(channels=3, num_classes=19))
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = resolve_config("test-toy-two-stage", None, ["data.context=2", "data.size=[24,32]", "model.channels=3",
                                                      "model.num_classes=19"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_weights(model, run_dir / "checkpoints/last.safetensors")
    code, _, err = run(capsys, "predict", moving_clip, "--weights", run_dir, "--horizon", "1", "--out", tmp_path / "p")
    assert code == 1 and "test-toy-two-stage needs labels but" in err and "vpcli segment" in err
    code, _, err = run(capsys, "predict", moving_clip, "--weights", run_dir, "--horizon", "2", "--labels-from",
                       "deeplabv3plus-mobilenet-synthstreet", "--lossless", "--out", tmp_path / "q")
    assert code == 0, err
    meta = json.loads((tmp_path / "q/clip/meta.json").read_text())
    assert meta["inputs"]["labels"] == "deeplabv3plus-mobilenet-synthstreet"
    # the labels the model saw are the segmenter's on the context frames (read back exactly: --lossless)
    from vpcli.io.labels import read_label_png
    from vpcli.io.video import read_video
    ctx = torch.from_numpy(read_video(tmp_path / "q/clip/context.mp4")[0].transpose(0, 3, 1, 2).copy()).float() / 255
    seg = load_segmenter("deeplabv3plus-mobilenet-synthstreet", channels_last=False).model
    with torch.no_grad():
        labels = seg.predict_labels(ctx)[None]  # 1,T,H,W
        want = next(iter(model.eval().predict({"rgb": ctx[None], "labels": labels}, 1))).labels[0, 0].numpy()
    assert np.array_equal(read_label_png(tmp_path / "q/clip/sample_000.labels/00000.png"), want)
