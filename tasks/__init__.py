"""Prefect tasks: thin, retry-safe wrappers over `lwst` (no logic of their own beyond wiring)."""
