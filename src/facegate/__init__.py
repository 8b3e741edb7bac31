"""FaceGate: face detection and recognition as a service."""

__version__ = "0.1.0"
