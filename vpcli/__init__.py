"""vpcli: video prediction toolkit (SLAMP, HVP, SADM, LMVP) with IO, weights, metrics.

Importing the package is cheap: submodules that need torch import it themselves.
"""
__version__ = "0.1.0"

from vpcli.errors import VpcliError  # noqa: E402,F401
