"""Prefect flows: `stylize_dataset` (manifest in, dataset out) and `augment_dataset`."""
