"""Face embedding models behind one interface."""

from facegate.embedding.base import Embedder

__all__ = ["Embedder"]
