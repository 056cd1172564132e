"""Convolutional LSTM (Shi et al., NeurIPS 2015), the recurrent core several predictors share."""
from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer: gates from a single conv over [input, hidden] (no peepholes)."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        z = x.new_zeros(b, self.hidden, h, w)
        return z, z

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        h, c = state if state is not None else self.init_state(x)
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)  # 4 x (B, hidden, H, W)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvLSTM(nn.Module):
    """A stack of ConvLSTM cells; ``forward`` runs one time step and returns the top output."""

    def __init__(self, in_channels: int, hidden: int, layers: int = 1, kernel_size: int = 3):
        super().__init__()
        self.cells = nn.ModuleList(
            ConvLSTMCell(in_channels if i == 0 else hidden, hidden, kernel_size) for i in range(layers))

    def forward(self, x: torch.Tensor, states: list | None = None):
        states = states if states is not None else [None] * len(self.cells)
        new = []
        for cell, st in zip(self.cells, states):
            x, st = cell(x, st)
            new.append(st)
        return x, new
