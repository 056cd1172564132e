"""The training contract shared by everything `vpcli.engine.trainer.Trainer` trains.

Predictors (``vpcli.predictors.base.Predictor``) and the trainable preprocessors (DeepLabV3+,
PWC-Net) are :class:`Trainable` modules. A trainable declares:

* **parts** -- named groups of its top-level submodules (HVP: ``structure`` and ``image``; SADM:
  ``dynamics`` and ``inpaint``). A method that declares none is one part, ``model``. Save and
  export write parts together or one at a time, ``--init PART=WEIGHTS`` loads one part.
* **training-only modules** -- attribute names of submodules used only to train (discriminators,
  teacher paths). Inference checkpoints never contain them and loading one does not need them.
* a **training plan** -- one or more :class:`Stage` s run in order (``vpcli train --stage NAME``
  runs one), each a list of named :class:`TrainStep` s with their own parameters, loss and
  frequency; the engine owns each step's optimiser, schedule and clipping (configured per step
  name in ``train.per_step``). Parts a stage freezes are put in eval mode, get no gradients and
  are in no optimiser.
* the **validation metric** its best checkpoint is chosen by (a key of ``validate()``'s record).

One iteration of a stage runs its due steps in order on the same batch. What one step makes and
a later one needs (a generator's fake clip for the discriminator step) goes through the
iteration's :class:`IterationCache`, whose keys the method declares in ``cache_keys``; the cache
is emptied at every iteration so nothing leaks across batches.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from vpcli.errors import UsageError, VpcliError

Batch = dict[str, Any]
Losses = dict[str, torch.Tensor]


class ContractError(VpcliError):
    """A method does not keep the Trainable / Predictor contract (a bug in the method, not in the input)."""


class IterationCache:
    """Tensors handed from one step of an iteration to a later one (e.g. ``fake`` from G to D).

    Only keys the method declares in ``Trainable.cache_keys`` (name -> what it holds) may be put;
    reading a key no earlier step put says which key and what should have produced it.
    """

    def __init__(self, declared: dict[str, str]):
        self.declared = dict(declared)
        self._values: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        if key not in self.declared:
            close = difflib.get_close_matches(key, list(self.declared), n=1)
            raise ContractError(f"iteration cache key {key!r} is not declared in cache_keys",
                                (f"did you mean {close[0]!r}? " if close else "")
                                + f"declared: {', '.join(sorted(self.declared)) or '(none)'}")
        self._values[key] = value

    def get(self, key: str) -> Any:
        if key not in self._values:
            what = self.declared.get(key)
            raise ContractError(f"iteration cache key {key!r} was read before any step of this iteration put it",
                                f"it holds {what}; order the steps so that its producer runs first"
                                if what else f"declare it in cache_keys; declared: {', '.join(self.declared)}")
        return self._values[key]

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def clear(self) -> None:
        self._values.clear()


@dataclass
class TrainState:
    """What a loss may depend on besides the batch: progress, scheduled values, the iteration cache."""

    step: int = 0                # iterations finished in this stage
    total_steps: int = 1
    epoch: int = 0
    stage: str = "train"
    # Probability of feeding the ground truth (not the model's own output) at the next step;
    # the engine sets it from the inverse-sigmoid scheduled-sampling schedule (1.0 = off).
    teacher_forcing: float = 1.0
    cache: IterationCache = field(default_factory=lambda: IterationCache({}))


@dataclass(frozen=True)
class TrainStep:
    """One named optimisation step: its parameters, the loss that trains them, how often it runs
    (every ``every``-th iteration of its stage, counting from the first), and whether its loss may
    leave some of its parameters unused."""

    name: str
    params: Callable[[], list[nn.Parameter]]
    loss: Callable[[Batch, TrainState], Losses]
    every: int = 1
    # True when the loss may leave some of ``params`` without a gradient in an iteration (a branch
    # not taken): data-parallel training then finds them each iteration (slower), else it errors.
    unused_params: bool = False

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"step {self.name!r}: every must be >= 1, got {self.every}")


@dataclass(frozen=True)
class Stage:
    """A phase of training: its steps, and the parts it freezes (eval mode, no grads, no optimiser)."""

    name: str
    steps: tuple[TrainStep, ...]
    frozen: tuple[str, ...] = ()


class Trainable(nn.Module):
    name: ClassVar[str] = ""
    parts: ClassVar[dict[str, tuple[str, ...]]] = {}        # part -> top-level submodule names
    training_only: ClassVar[tuple[str, ...]] = ()            # top-level submodules used only in training
    cache_keys: ClassVar[dict[str, str]] = {}                # iteration-cache key -> what it holds
    validation_metric: ClassVar[tuple[str, str]] = ("loss", "min")  # key of validate(), min | max

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # --- training plan -----------------------------------------------------------------------
    def loss(self, batch: Batch, state: TrainState) -> Losses:
        """Loss terms for the single-step case; must contain ``"loss"`` (the total)."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")

    def train_steps(self) -> list[TrainStep]:
        """The steps of a one-stage method: by default one step, ``model``, over every parameter."""
        return [TrainStep("model", lambda: [p for p in self.inference_parameters() if p.requires_grad], self.loss)]

    def training_plan(self) -> list[Stage]:
        """Stages in the order they run; by default one stage, ``train``, of ``train_steps()``."""
        steps = tuple(self.train_steps())
        return [Stage("train", steps)] if steps else []

    def validate(self, batch: Batch, state: TrainState) -> dict[str, float]:
        """Validation numbers for one batch; by default the loss terms of the stage's first step."""
        stage = self.stage(state.stage)
        return {k: float(v) for k, v in stage.steps[0].loss(batch, state).items()}

    def stage(self, name: str) -> Stage:
        plan = self.training_plan()
        for s in plan:
            if s.name == name:
                return s
        valid = [s.name for s in plan]
        close = difflib.get_close_matches(name, valid, n=1)
        raise UsageError(f"{self.name or type(self).__name__} has no training stage {name!r}",
                         (f"did you mean {close[0]!r}? " if close else "") + f"stages: {', '.join(valid) or '(none)'}")

    def forward(self, batch: Batch, step: str = "model", state: TrainState | None = None) -> Losses:
        """The losses of the named step (of any stage) for ``batch``."""
        plan = self.training_plan()
        state = state or TrainState(stage=plan[0].name if plan else "train")
        for st in plan:
            for s in st.steps:
                if s.name == step:
                    return s.loss(batch, state)
        raise KeyError(f"{type(self).__name__} has no training step {step!r}")

    # --- parts ---------------------------------------------------------------------------------
    def part_names(self) -> list[str]:
        return list(self.parts) or ["model"]

    def _check_part(self, part: str) -> None:
        if part not in self.part_names():
            close = difflib.get_close_matches(part, self.part_names(), n=1)
            raise UsageError(f"{self.name or type(self).__name__} has no part {part!r}",
                             (f"did you mean {close[0]!r}? " if close else "") + f"parts: {', '.join(self.part_names())}")

    def _top(self, key: str) -> str:
        return key.split(".", 1)[0]

    def part_of(self, key: str) -> str | None:
        """The part a state-dict key or parameter name belongs to (None: training-only)."""
        top = self._top(key)
        if top in self.training_only:
            return None
        for part, members in self.parts.items():
            if top in members:
                return part
        if self.parts:
            raise ContractError(f"{type(self).__name__}.{top} is in no part and not training-only",
                                "list every top-level submodule in `parts` or `training_only`")
        return "model"

    def _params_where(self, keep: Callable[[str], bool]) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if keep(n)]

    def inference_parameters(self) -> list[nn.Parameter]:
        return self._params_where(lambda n: self._top(n) not in self.training_only)

    def part_parameters(self, *parts: str) -> list[nn.Parameter]:
        for p in parts:
            self._check_part(p)
        return self._params_where(lambda n: self.part_of(n) in parts)

    def module_parameters(self, *names: str) -> list[nn.Parameter]:
        """Parameters of the named top-level submodules (a training-only module, say)."""
        return self._params_where(lambda n: self._top(n) in names)

    def part_modules(self, part: str) -> list[nn.Module]:
        self._check_part(part)
        return [m for n, m in self.named_children() if self.part_of(n) == part]

    def inference_state_dict(self, parts: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The state of the inference parts (all, or those named): what inference checkpoints hold."""
        keep = set(parts) if parts is not None else set(self.part_names())
        for p in keep:
            self._check_part(p)
        return {k: v for k, v in self.state_dict().items() if self.part_of(k) in keep}

    def load_inference_state(self, state: dict[str, torch.Tensor], parts: Iterable[str] | None = None,
                             where: str = "the checkpoint") -> None:
        """Load the named parts (default: every part) from ``state``; names and shapes must match.

        Keys of training-only modules in ``state`` are ignored, and they need not be there.
        """
        own = self.inference_state_dict(parts)
        wanted = set(parts) if parts is not None else set(self.part_names())
        children = dict(self.named_children())

        def unexpected_key(k: str) -> bool:  # not ours, not training-only, not another part's
            if k in own or self._top(k) in self.training_only:
                return False
            if self._top(k) not in children:
                return True
            return self.part_of(k) in wanted
        self._check_parts_present(own, state, where)
        detail = state_mismatch(own, state, [k for k in state if unexpected_key(k)])
        if detail:
            raise VpcliError(f"{where} does not fit this model ({self.name or type(self).__name__}: {detail})",
                             "use weights made by the same method and model config")
        current = self.state_dict()
        current.update({k: state[k] for k in own})
        self.load_state_dict(current)

    def _check_parts_present(self, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> None:
        """A file that holds some parts of a multi-part method but not all those asked for (a run
        of one stage, ``vpcli weights export --part``) is refused naming the missing part and the
        stage that trains it, not with a list of missing keys."""
        if len(self.part_names()) < 2:
            return
        asked = sorted({self.part_of(k) for k in own}, key=self.part_names().index)
        have = [p for p in self.part_names() if any(self.part_of(k) == p for k in state
                                                      if self._top(k) not in self.training_only and k in own)]
        missing = [p for p in asked if p not in have]
        if not have or not missing:
            return  # nothing of ours at all: the generic mismatch message says what it is
        who = self.name or type(self).__name__
        stages = [st.name for st in self.training_plan() if st.name in self._stages_training(missing[0])][:1]
        how = (f"train it (`vpcli train --method {who} --stage {stages[0]} --init {have[0]}={where}`) and pass "
               "that run's weights" if stages else "pass weights that hold it")
        raise VpcliError(f"{where} holds only the {', '.join(have)} part of {who}; the "
                         f"{', '.join(missing)} part {'is' if len(missing) == 1 else 'are'} missing",
                         f"{how}, or use weights that hold every part (`vpcli weights list`)")

    def _stages_training(self, part: str) -> list[str]:
        """The stages with a step that optimises some parameter of ``part``."""
        own = {id(p) for p in self.part_parameters(part)}
        return [st.name for st in self.training_plan() if part not in st.frozen
                and any(id(p) in own for s in st.steps for p in s.params())]

    def set_frozen(self, parts: Iterable[str]) -> None:
        """Freeze parts (eval mode, requires_grad False) and unfreeze the others."""
        frozen = set(parts)
        for p in frozen:
            self._check_part(p)
        for n, p in self.named_parameters():
            p.requires_grad_(self.part_of(n) not in frozen)
        self._frozen_parts = tuple(sorted(frozen))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        frozen = getattr(self, "_frozen_parts", ())
        if mode and frozen:  # frozen parts stay in eval mode (BatchNorm statistics, dropout)
            for part in frozen:
                for m in self.part_modules(part):
                    m.eval()
        return self


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], unexpected: list[str]) -> str:
    """What keeps ``state`` from loading into a model whose state is ``own`` (missing keys, the
    ``unexpected`` ones, shape differences), as one line; empty when it fits."""
    missing = [k for k in own if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    return "; ".join(f"{what} {items[:2]}" for what, items in
                     (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if items)


def check_plan(model: Trainable) -> list[Stage]:
    """The plan, checked: unique stage and step names, frozen parts that exist, a loss per step."""
    plan = model.training_plan()
    seen_stage: set[str] = set()
    for st in plan:
        if st.name in seen_stage:
            raise ContractError(f"{model.name}: stage {st.name!r} appears twice in the training plan")
        seen_stage.add(st.name)
        names = [s.name for s in st.steps]
        if len(set(names)) != len(names):
            raise ContractError(f"{model.name}: stage {st.name!r} repeats a step name ({names})")
        for part in st.frozen:
            model._check_part(part)
    return plan


def all_step_names(model: Trainable) -> list[str]:
    return sorted({s.name for st in model.training_plan() for s in st.steps})
