"""Train one stage of a method's plan by hand on a fixed batch (tests of HVP, SADM): each step of
the stage with its own Adam, in the plan's order, the stage's frozen parts frozen."""
from __future__ import annotations

import torch

from vpcli.trainable import IterationCache, TrainState


def fresh_state(model, stage: str) -> TrainState:
    return TrainState(stage=stage, cache=IterationCache(model.cache_keys))


def train_stage(model, stage: str, batch: dict, steps: int, lr: float = 2e-3) -> list[dict[str, dict[str, float]]]:
    """Per iteration, step name -> its loss terms (floats)."""
    plan = model.stage(stage)
    model.set_frozen(list(plan.frozen))
    opts = {s.name: torch.optim.Adam(s.params(), lr=lr) for s in plan.steps}
    hist = []
    for _ in range(steps):
        st = fresh_state(model, stage)
        logs = {}
        for s in plan.steps:
            opts[s.name].zero_grad(set_to_none=True)
            out = s.loss(batch, st)
            out["loss"].backward()
            opts[s.name].step()
            logs[s.name] = {k: float(v.detach()) for k, v in out.items()}
        hist.append(logs)
    return hist
