"""Predictors register themselves here on import (see vpcli.registry)."""
from vpcli.predictors import base, baselines, hvp, lmvp, sadm, slamp  # noqa: F401
