"""The pipeline subcommands, one module each (segment, flow, train, predict, eval).

Each is parse -> `vpcli.api` call -> render. The api is imported inside the command so that
`vpcli --help` never imports torch.
"""
from __future__ import annotations

import typer

from vpcli.cli import eval_, flow, predict, segment, train


def register(app: typer.Typer) -> None:
    app.command("segment")(segment.segment)
    app.command("flow")(flow.flow)
    app.command("train")(train.train)
    app.command("predict")(predict.predict)
    app.command("eval")(eval_.evaluate)
