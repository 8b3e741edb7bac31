"""One camera frame → one `Observation`: faces counted, and for a single face its landmarks and vector."""

from __future__ import annotations

import numpy as np

from facegate.liveness.landmarks import landmarks68
from facegate.liveness.session import Observation
from facegate.pipeline import BACKGROUND_FACE_RATIO, Pipeline


def observe_frame(pipeline: Pipeline, image: np.ndarray) -> Observation:
    """What the session needs from `image` (RGB uint8). CPU-bound: run it in a worker thread.

    Faces much smaller than the largest are background (the rule registration uses), so a
    passer-by far behind does not end a session; a second face of similar size does.
    """
    faces = sorted(pipeline.detect(image), key=lambda face: face.area, reverse=True)
    if not faces:
        return Observation(faces=0)
    rivals = sum(face.width >= BACKGROUND_FACE_RATIO * faces[0].width for face in faces)
    if rivals > 1:
        return Observation(faces=rivals)
    face = faces[0]
    return Observation(
        faces=1,
        face=face,
        landmarks=landmarks68(image, face),
        embedding=pipeline.embedder.embed(image, [face])[0],
        image=image,
    )
