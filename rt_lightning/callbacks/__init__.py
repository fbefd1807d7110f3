"""Lightning callbacks: ``GenerationValidation`` (generation-based validation metrics and samples) and ``RunSummary``
(what a finished ``fit`` did and what to run next)."""

from rt_lightning.callbacks.generation_validation import GenerationValidation
from rt_lightning.callbacks.run_summary import RunSummary

__all__ = ["GenerationValidation", "RunSummary"]
