"""Where the tests' files live: the repository, and the shared, read-only test data beside it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FACES = SHARED / "data" / "faces"
REFERENCE = SHARED / "data" / "reference"
