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


def run_cells(cells, x: torch.Tensor, states: list | None = None) -> tuple[torch.Tensor, list]:
    """One time step of stacked ConvLSTM cells (each cell's output is the next one's input):
    the top output and every layer's new ``(h, c)``; ``states`` None means zeros."""
    states = states if states is not None else [None] * len(cells)
    new = []
    for cell, st in zip(cells, states):
        x, st = cell(x, st)
        new.append(st)
    return x, new


class ConvLSTM(nn.Module):
    """A stack of ConvLSTM cells; ``forward`` runs one time step and returns the top output."""

    def __init__(self, in_channels: int, hidden: int, layers: int = 1, kernel_size: int = 3):
        super().__init__()
        self.cells = nn.ModuleList(
            ConvLSTMCell(in_channels if i == 0 else hidden, hidden, kernel_size) for i in range(layers))

    def forward(self, x: torch.Tensor, states: list | None = None):
        return run_cells(self.cells, x, states)


class GroupedConvLSTMCell(nn.Module):
    """``groups`` independent ConvLSTM cells run as one grouped convolution (Krizhevsky et al.'s
    grouped convolution; SADM's per-class encoders and decoders, Sec. 3.1 / 4).

    Input ``(B, G * in_channels, H, W)`` and state ``(B, G * hidden, H, W)``, group-major (group
    g's channels are ``[g * n, (g + 1) * n)``). Group g's gates read only group g's input and
    hidden state, so the cell equals G separate :class:`ConvLSTMCell` s (tested) at the cost of
    one convolution call.
    """

    def __init__(self, groups: int, in_channels: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.groups, self.in_channels, self.hidden = groups, in_channels, hidden
        self.gates = nn.Conv2d(groups * (in_channels + hidden), groups * 4 * hidden, kernel_size,
                               padding=kernel_size // 2, groups=groups)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        z = x.new_zeros(b, self.groups * self.hidden, h, w)
        return z, z

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        h, c = state if state is not None else self.init_state(x)
        b, _, hh, ww = x.shape
        g = self.groups
        # interleave per group: (B, G, in, H, W) ++ (B, G, hidden, H, W) -> (B, G * (in + hidden), H, W)
        xh = torch.cat([x.view(b, g, self.in_channels, hh, ww), h.view(b, g, self.hidden, hh, ww)], 2)
        gates = self.gates(xh.flatten(1, 2)).view(b, g, 4, self.hidden, hh, ww)
        i, f, o, gg = gates.unbind(2)                                 # each (B, G, hidden, H, W)
        c = torch.sigmoid(f) * c.view(b, g, self.hidden, hh, ww) + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        h, c = h.flatten(1, 2), c.flatten(1, 2)
        return h, (h, c)
