"""Several embedders as one: their unit vectors, each scaled by the square root of its weight,
concatenated and made unit length again.

The cosine similarity of two fused vectors is then the weighted mean of the parts' cosine
similarities, so the gallery's cosine distance keeps working unchanged. Weights of 1/σ, σ being
the spread (standard deviation) of a part's similarities between different people, put the parts'
scores on a common scale before they are added (benchmarks/fusion_bench.py fits them on LFW).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facegate.embedding.base import Embedder
from facegate.faces import Face


class FusionEmbedder(Embedder):
    """`parts`: (embedder, weight) pairs. The name records every part and its share of the weight,
    so a gallery built with another combination is refused rather than compared."""

    def __init__(self, parts: Sequence[tuple[Embedder, float]]) -> None:
        if len(parts) < 2 or any(weight <= 0 for _, weight in parts):
            raise ValueError("a fusion needs two or more embedders with positive weights")
        total = sum(weight for _, weight in parts)
        self._parts = [(embedder, np.float32(np.sqrt(weight / total))) for embedder, weight in parts]
        self.dim = sum(embedder.dim for embedder, _ in parts)
        self.name = "fusion(" + ",".join(f"{e.name}*{w / total:.3f}" for e, w in parts) + ")"

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for embedder, _ in self._parts for name in embedder.providers))

    def embed(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        # Each part is unit length and its scale's square is its share: the result is unit length.
        fused = np.concatenate([embedder.embed(image, faces) * scale for embedder, scale in self._parts], 1)
        return (fused / np.linalg.norm(fused, axis=1, keepdims=True)).astype(np.float32)
