"""Predictors register themselves here on import (see vpcli.registry)."""
from vpcli.predictors import base, baselines, lmvp, slamp  # noqa: F401
