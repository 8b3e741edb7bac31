"""MTCNN face detection on ONNX Runtime with the weights of the `mtcnn` package."""

from facegate.detection.mtcnn import MTCNN, DetectionBudgetError, DetectionParams

__all__ = ["MTCNN", "DetectionBudgetError", "DetectionParams"]
