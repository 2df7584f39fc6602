"""The learned warp network: model, synthetic data, training, inference."""
