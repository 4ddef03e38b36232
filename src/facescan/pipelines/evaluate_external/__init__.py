"""The `evaluate_external` pipeline (one namespace per variant run)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
