"""MTCNN face detection on ONNX Runtime with the weights of the `mtcnn` package."""

from facegate.detection.mtcnn import MTCNN, DetectionBudgetError
from facegate.faces import DetectionParams

__all__ = ["MTCNN", "DetectionBudgetError", "DetectionParams"]
