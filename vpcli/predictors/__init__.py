"""Predictors register themselves here on import (see vpcli.registry)."""
from vpcli.predictors import base, baselines, slamp  # noqa: F401
