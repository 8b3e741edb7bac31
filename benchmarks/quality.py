"""Calibrate the quality gate on the shared photos: how many real faces each bound rejects.

For every portrait and LFW image, the main face (the largest; for LFW the one nearest the centre)
is measured: eye distance, sharpness and yaw (facegate.quality). Printed: their percentiles, the
share of these real faces each bound of the current settings rejects, and the same measures for
the faces made worse on purpose (blurred, shrunk), which the gate is for.

    python benchmarks/quality.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from calibrate import central_face
from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.imaging import load_image_file
from facegate.quality import Quality, assess

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def main_face_quality(detector: MTCNN, image: np.ndarray, central: bool) -> Quality | None:
    faces = detector.detect(image)
    if not faces:
        return None
    height, width = image.shape[:2]
    face = central_face(faces, width, height) if central else max(faces, key=lambda f: f.area)
    return assess(image, face) if face is not None else None


def table(label: str, measured: list[Quality]) -> None:
    values = {
        "eye distance": np.array([q.eye_distance for q in measured]),
        "sharpness": np.array([q.sharpness for q in measured]),
        "|yaw|": np.abs([q.yaw for q in measured]),
    }
    print(f"\n{label}: {len(measured)} faces")
    print("| measure | p0.5 | p1 | p5 | p50 | p95 | p99 | p99.5 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, column in values.items():
        cells = " | ".join(f"{np.percentile(column, p):.3f}" for p in (0.5, 1, 5, 50, 95, 99, 99.5))
        print(f"| {name} | {cells} |")


def main() -> None:
    settings = Settings()
    bounds = settings.quality_bounds()
    detector = MTCNN()
    real: list[Quality] = []
    blurred: dict[float, list[Quality]] = {2.0: [], 4.0: []}
    photos = sorted((FACES / "portraits").glob("*/*.jpg")) + sorted((FACES / "lfw").glob("*/*/*.jpg"))
    for index, path in enumerate(photos):
        image = load_image_file(path)
        central = "lfw" in path.parts
        quality = main_face_quality(detector, image, central)
        if quality is None:
            continue
        real.append(quality)
        if index % 8 == 0:  # a sample made worse on purpose
            for radius, sink in blurred.items():
                scale = radius * max(image.shape[:2]) / 250  # the same blur relative to the face
                worse = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(scale)))
                if (measured := main_face_quality(detector, worse, central)) is not None:
                    sink.append(measured)
    table("real faces (portraits + LFW)", real)
    for radius, measured in blurred.items():
        table(f"blurred (Gaussian, radius {radius} px per 250 px of image)", measured)
    rejected = {
        "too small": np.mean([q.eye_distance < bounds.min_eye_distance for q in real]),
        "turned": np.mean([abs(q.yaw) > bounds.max_yaw for q in real]),
        "blurred": np.mean([q.sharpness < bounds.min_sharpness for q in real]),
        "any": np.mean([q.problem(bounds) is not None for q in real]),
    }
    print(f"\nreal faces rejected at {bounds}: " + ", ".join(f"{k} {v:.2%}" for k, v in rejected.items()))
    for radius, measured in blurred.items():
        share = np.mean([q.problem(bounds) is not None for q in measured])
        print(f"blurred radius {radius}: rejected {share:.1%}")


if __name__ == "__main__":
    main()
