"""Shared layers only (ConvLSTM, warping, encoders, ...); models live in vpcli.predictors."""
