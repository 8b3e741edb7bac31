"""Face detection behind one interface (`Detector`); MTCNN on ONNX Runtime with the weights of the
`mtcnn` package is the one implementation."""

from facegate.detection.base import Detector
from facegate.detection.mtcnn import MTCNN, DetectionBudgetError
from facegate.faces import DetectionParams

__all__ = ["MTCNN", "DetectionBudgetError", "DetectionParams", "Detector"]
