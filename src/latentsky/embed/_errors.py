"""Parameter checking shared by the embedding modules."""

from __future__ import annotations

from latentsky.exceptions import EmbeddingError


def check_param(name: str, value, ok: bool, requirement: str) -> None:
    """Raise :class:`EmbeddingError` naming ``name`` unless ``ok``."""
    if not ok:
        raise EmbeddingError(f"parameter {name}={value!r}: {requirement}")
