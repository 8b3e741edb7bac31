"""One camera frame → one `Observation`: faces counted, and for a single face its landmarks and vector."""

from __future__ import annotations

import numpy as np

from facegate.liveness.landmarks import landmarks68
from facegate.liveness.session import Observation
from facegate.pipeline import Pipeline


def observe_frame(pipeline: Pipeline, image: np.ndarray) -> Observation:
    """What the session needs from `image` (RGB uint8). CPU-bound: run it in a worker thread.

    The face is chosen as registration chooses it (`Pipeline.select_face`), so a passer-by far
    behind does not end a session; a second face of similar size does.
    """
    selection = pipeline.select_face(image)
    if selection.face is None or selection.comparable > 1:
        return Observation(faces=selection.comparable)
    return Observation(
        faces=1,
        face=selection.face,
        landmarks=landmarks68(image, selection.face),
        embedding=pipeline.embed_face(image, selection.face).embedding,
        image=image,
    )
