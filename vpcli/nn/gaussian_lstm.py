"""The recurrent blocks of SVG-style stochastic predictors (Denton & Fergus 2018; SLAMP 2021).

* :class:`LSTMStack` -- the *frame predictor*: linear embedding, stacked LSTM cells, ``tanh``
  output.
* :class:`GaussianLSTM` -- a *posterior* or *learned prior*: linear embedding, stacked LSTM cells,
  then two linear heads for the mean and log-variance of a diagonal Gaussian.
* :class:`ConvLSTMStack`, :class:`GaussianConvLSTM` -- the same on feature maps, with 3x3
  convolutions (SLAMP's KITTI / Cityscapes models, App. C).

Unlike the reference code (which keeps ``self.hidden`` on the module, sized for one batch), the
state is passed in and returned, so one module serves any batch and a horizon of any length runs
without touching module attributes. ``state=None`` means zeros.

Parameter names follow kaanakan/slamp ``models/lstm.py`` (``embed``, ``lstm.{i}``, ``output.0``,
``mu_net``, ``logvar_net``) and ``models/conv_lstms.py`` (whose cell's ``conv`` is our
:class:`~vpcli.nn.convlstm.ConvLSTMCell`'s ``gates``; same gate order i, f, o, g).
"""
from __future__ import annotations

import torch
from torch import nn

from vpcli.nn.convlstm import ConvLSTMCell, run_cells

State = list  # per layer: (h, c)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``z = mu + sigma * eps`` with ``sigma = exp(logvar / 2)`` (Kingma & Welling 2014)."""
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mu_q, var_q) || N(mu_p, var_p))`` for diagonal Gaussians."""
    return (0.5 * (logvar_p - logvar_q)
            + (logvar_q.exp() + (mu_q - mu_p) ** 2) / (2 * logvar_p.exp()) - 0.5)


class _EmbeddedLSTM(nn.Module):
    """``LSTM^L(W_embed x)``, the part :class:`LSTMStack` and :class:`GaussianLSTM` share."""

    def __init__(self, in_size: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Linear(in_size, hidden)
        self.lstm = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))

    def _run(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        h = self.embed(x)  # (B, in) -> (B, hidden)
        state = state if state is not None else [None] * len(self.lstm)
        new = []
        for cell, hc in zip(self.lstm, state):
            hc = cell(h, hc)
            new.append(hc)
            h = hc[0]
        return h, new  # the last layer's output, and every layer's (h, c)


class LSTMStack(_EmbeddedLSTM):
    """``tanh(W_out LSTM^L(W_embed x))``: SVG's / SLAMP's frame predictor ``lstm``."""

    def __init__(self, in_size: int, out_size: int, hidden: int, layers: int):
        super().__init__(in_size, hidden, layers)
        self.output = nn.Sequential(nn.Linear(hidden, out_size), nn.Tanh())

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        h, new = self._run(x, state)
        return self.output(h), new


class GaussianLSTM(_EmbeddedLSTM):
    """``(mu, logvar)`` of a diagonal Gaussian from ``LSTM^L(W_embed x)``: ``gaussian_lstm``."""

    def __init__(self, in_size: int, out_size: int, hidden: int, layers: int):
        super().__init__(in_size, hidden, layers)
        self.mu_net = nn.Linear(hidden, out_size)
        self.logvar_net = nn.Linear(hidden, out_size)

    def forward(self, x: torch.Tensor, state: State | None = None):
        h, new = self._run(x, state)
        return self.mu_net(h), self.logvar_net(h), new


class ConvLSTMStack(nn.Module):
    """The frame predictor on feature maps: 3x3 conv embedding, ConvLSTM cells, 3x3 conv + tanh."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, hidden, 3, 1, 1)
        self.lstm = nn.ModuleList(ConvLSTMCell(hidden, hidden, 3) for _ in range(layers))
        self.output = nn.Sequential(nn.Conv2d(hidden, out_channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        h, new = run_cells(self.lstm, self.embed(x), state)  # embed: (B, in, h, w) -> (B, hidden, h, w)
        return self.output(h), new


class GaussianConvLSTM(nn.Module):
    """Posterior / prior on feature maps: ConvLSTM cells straight on the input, 3x3 conv heads.

    The reference ``gaussian_conv_lstm`` also defines an ``embed`` convolution that its forward
    never uses; it is left out here (the checkpoint converter drops it). Its cells all take
    ``in_channels``, which only works for one layer; here layer ``i > 0`` takes ``hidden``, the
    same model for the one layer SLAMP uses.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, layers: int):
        super().__init__()
        self.lstm = nn.ModuleList(ConvLSTMCell(in_channels if i == 0 else hidden, hidden, 3) for i in range(layers))
        self.mu_net = nn.Conv2d(hidden, out_channels, 3, 1, 1)
        self.logvar_net = nn.Conv2d(hidden, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, state: State | None = None):
        h, new = run_cells(self.lstm, x, state)
        return self.mu_net(h), self.logvar_net(h), new
