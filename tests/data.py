"""Where the shared, read-only test data lives (beside the repository root)."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACES = SHARED / "data" / "faces"
REFERENCE = SHARED / "data" / "reference"
