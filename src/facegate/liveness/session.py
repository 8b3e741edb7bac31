"""One liveness session as a pure state machine: observations in, progress and a verdict out.

The socket endpoint feeds it one `Observation` per processed frame; everything that decides
"live or not" is here, with an injectable clock and random source, so it is tested on landmark
sequences without a camera, a model or a socket.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from facegate.config import Settings
from facegate.faces import Face
from facegate.liveness.planarity import planar_residual
from facegate.liveness.signals import eye_aspect_ratio, mouth_aspect_ratio, yaw_index
from facegate.recognition import cosine_distance

log = logging.getLogger(__name__)


class Challenge(StrEnum):
    BLINK = "blink"
    TURN_LEFT = "turn_left"  # the person's own left: the nose moves to image right (unmirrored)
    TURN_RIGHT = "turn_right"
    OPEN_MOUTH = "open_mouth"


TURNS = (Challenge.TURN_LEFT, Challenge.TURN_RIGHT)

INSTRUCTIONS: dict[Challenge, str] = {
    Challenge.BLINK: "blink",
    Challenge.TURN_LEFT: "turn your head to your left",
    Challenge.TURN_RIGHT: "turn your head to your right",
    Challenge.OPEN_MOUTH: "open your mouth",
}


class Reason(StrEnum):
    """Why a session failed; stable codes for clients, each with a sentence in `Verdict.messages`."""

    EXPIRED = "expired"
    FRAME_LIMIT = "frame_limit"
    NO_FACE = "no_face"
    NO_FRONTAL_FACE = "no_frontal_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_JUMPED = "face_jumped"
    IDENTITY_CHANGED = "identity_changed"
    FLAT_MOTION = "flat_motion"


class SessionClosed(RuntimeError):
    """The session already has its verdict: sessions are single-use."""


# The settings' defaults, so that a `Bounds()` in a test or benchmark checks what the service does.
_DEFAULT = {name: info.default for name, info in Settings.model_fields.items()}


@dataclass(frozen=True, slots=True)
class Bounds:
    """Every threshold of the check; those that are settings default to the settings' defaults
    (the service fills them from `Settings`: `Bounds.from_settings`)."""

    planar_residual: float = _DEFAULT["liveness_planar_residual"]  # out-of-plane residual a turn needs
    turn_yaw: float = _DEFAULT["liveness_turn_yaw"]  # yaw index a turn must reach
    frontal_yaw: float = 0.12  # |yaw index| of a frontal frame
    eye_closed: float = 0.65  # eye aspect ratio below this fraction of the open baseline: closed
    eye_open: float = 0.85  # ... above this fraction: open again
    mouth_closed: float = 0.25  # mouth aspect ratio of a closed mouth (lips apart in a smile: ~0.2)
    mouth_open: float = 0.5  # ... of an open one
    max_jump: float = 0.5  # box centre moving more than this many box widths between frames
    max_scale_change: float = 1.5  # box width changing by more than this factor between frames
    match_threshold: float = _DEFAULT["face_verify_threshold"]  # distance from the first neutral frame
    turned_match_threshold: float = 0.12  # ... from a turned frame (benchmarks/liveness_calibrate.py)
    timeout_s: float = _DEFAULT["liveness_timeout"]
    max_frames: int = _DEFAULT["liveness_max_frames"]

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            planar_residual=settings.liveness_planar_residual,
            turn_yaw=settings.liveness_turn_yaw,
            match_threshold=settings.face_verify_threshold,  # one-to-one: the same face as at the start
            timeout_s=settings.liveness_timeout,
            max_frames=settings.liveness_max_frames,
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """What one frame showed: how many faces, and for a single face its box, landmarks and vector."""

    faces: int
    face: Face | None = None
    landmarks: np.ndarray | None = None  # (68, 2)
    embedding: np.ndarray | None = None
    image: np.ndarray | None = None  # the decoded frame: the best one is recognised when live


@dataclass(frozen=True, slots=True)
class Signals:
    ear: float
    mar: float
    yaw: float
    residual: float | None  # against the frontal reference, once there is one


@dataclass(frozen=True, slots=True)
class Progress:
    face_found: bool
    current: Challenge | None
    completed: tuple[Challenge, ...]
    hint: str
    signals: Signals | None


@dataclass(frozen=True, slots=True)
class Verdict:
    live: bool
    score: float
    reasons: tuple[Reason, ...]
    messages: tuple[str, ...]
    completed: tuple[Challenge, ...]
    best: Observation | None  # the most frontal neutral frame, for recognition when live


def draw_challenges(rng: random.Random) -> tuple[Challenge, ...]:
    """Two or three distinct challenges in random order, at least one of them a turn: the turn is
    where the flat-photo check applies, so no sequence can be passed without it."""
    turn = rng.choice(TURNS)
    others = [c for c in Challenge if c not in TURNS] + [t for t in TURNS if t is not turn]
    chosen = [turn, *rng.sample(others, rng.choice((1, 2)))]
    rng.shuffle(chosen)
    return tuple(chosen)


@dataclass
class _Step:
    """Progress inside the current challenge: the "before" state each one needs first."""

    primed: bool = False  # blink: eyes seen open; open_mouth: mouth seen closed
    closed: bool = False  # blink: eyes seen closed after being open


@dataclass
class Session:
    challenges: tuple[Challenge, ...]
    bounds: Bounds = field(default_factory=Bounds)
    clock: Callable[[], float] = time.monotonic
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def __post_init__(self) -> None:
        if not self.challenges:
            raise ValueError("a session needs at least one challenge")
        self.started = self.clock()
        self.verdict: Verdict | None = None
        self._done: list[Challenge] = []
        self._step = _Step()
        self._frames = 0
        self._frames_with_face = 0
        self._flat_turns = 0
        self._open_eyes: list[float] = []
        self._reference: Observation | None = None
        self._best: Observation | None = None
        self._best_yaw = np.inf
        self._last_face: Face | None = None
        self._final_check = False  # all challenges done; waiting for a frontal frame to compare

    @classmethod
    def start(
        cls, bounds: Bounds, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic
    ) -> Session:
        """A session with a fresh random challenge sequence (from the system's entropy by default)."""
        return cls(draw_challenges(rng or random.SystemRandom()), bounds, clock)

    @property
    def deadline(self) -> float:
        return self.started + self.bounds.timeout_s

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    @property
    def current(self) -> Challenge | None:
        return None if len(self._done) == len(self.challenges) else self.challenges[len(self._done)]

    def expire(self) -> Verdict:
        """End the session because time ran out (the endpoint calls this when no frame comes)."""
        return self._fail(Reason.EXPIRED, self._pending_message("the deadline passed"))

    def observe(self, observation: Observation) -> Progress:
        """Advance on one processed frame; `verdict` is set once the session has ended."""
        if self.verdict is not None:
            raise SessionClosed(f"session {self.id} has ended; start a new one")
        self._frames += 1
        if self.clock() > self.deadline:
            self.expire()
            return self._progress(observation.faces > 0, "time is up", None)
        if self._frames > self.bounds.max_frames:
            self._fail(
                Reason.FRAME_LIMIT, self._pending_message(f"more than {self.bounds.max_frames} frames")
            )
            return self._progress(observation.faces > 0, "too many frames", None)
        if observation.faces > 1:
            self._fail(Reason.MULTIPLE_FACES, f"{observation.faces} faces in one frame; only one may be seen")
            return self._progress(True, "only one person may be in view", None)
        if observation.face is None or observation.landmarks is None:
            return self._progress(False, "no face found: look at the camera", None)
        self._frames_with_face += 1
        return self._face_frame(observation)

    def _face_frame(self, observation: Observation) -> Progress:
        face, points = observation.face, observation.landmarks
        assert face is not None and points is not None
        if self._jumped(face):
            self._fail(Reason.FACE_JUMPED, "the face jumped to another place between two frames")
            return self._progress(True, "keep your face in view", None)
        self._last_face = face
        signals = Signals(
            ear=eye_aspect_ratio(points),
            mar=mouth_aspect_ratio(points),
            yaw=yaw_index(points),
            residual=None if self._reference is None else planar_residual(self._reference.landmarks, points),
        )
        if self._is_plain(signals) and not self._check_identity(observation, signals):
            return self._progress(True, "a different face appeared", signals)
        if self._reference is None:
            return self._progress(True, "look straight at the camera", signals)
        hint = self._advance(signals)
        if self._final_check and self.verdict is None and self._is_neutral(signals):
            self._pass()
            hint = "done"
        return self._progress(True, hint, signals)

    def _progress(self, face_found: bool, hint: str, signals: Signals | None) -> Progress:
        return Progress(face_found, self.current, tuple(self._done), hint, signals)

    def _jumped(self, face: Face) -> bool:
        last = self._last_face
        if last is None:
            return False
        width = max(face.width, last.width, 1e-6)
        shift = np.hypot(
            (face.box[0] + face.box[2] - last.box[0] - last.box[2]) / 2,
            (face.box[1] + face.box[3] - last.box[1] - last.box[3]) / 2,
        )
        scale = max(face.width, last.width) / max(min(face.width, last.width), 1e-6)
        return shift > self.bounds.max_jump * width or scale > self.bounds.max_scale_change

    def _baseline_ear(self) -> float | None:
        return float(np.median(self._open_eyes)) if self._open_eyes else None

    def _is_plain(self, signals: Signals) -> bool:
        """Eyes not closed and mouth not open: the frames whose identity is compared."""
        baseline = self._baseline_ear()
        eyes_open = baseline is None or signals.ear >= self.bounds.eye_open * baseline
        return eyes_open and signals.mar < self.bounds.mouth_open

    def _is_neutral(self, signals: Signals) -> bool:
        """A plain frontal frame: the reference, the best and the final frame are such frames."""
        return self._is_plain(signals) and abs(signals.yaw) <= self.bounds.frontal_yaw

    def _check_identity(self, observation: Observation, signals: Signals) -> bool:
        """The first neutral frame is the reference; every later plain frame must show the same
        person, within a looser distance when the head is turned (the embedding drifts with the
        pose); the most frontal neutral frame is kept for recognition. False (and the session
        failed) on a mismatch."""
        frontal = abs(signals.yaw) <= self.bounds.frontal_yaw
        if self._reference is None:
            if not frontal:
                return True
            self._reference = observation
        elif observation.embedding is not None and self._reference.embedding is not None:
            limit = self.bounds.match_threshold if frontal else self.bounds.turned_match_threshold
            distance = cosine_distance(observation.embedding, self._reference.embedding)
            if distance > limit:
                self._fail(
                    Reason.IDENTITY_CHANGED,
                    f"not the face the session started with (distance {distance:.3f} > {limit:.3f})",
                )
                return False
        if frontal:
            self._open_eyes.append(signals.ear)
            if abs(signals.yaw) < self._best_yaw:
                self._best, self._best_yaw = observation, abs(signals.yaw)
        return True

    def _advance(self, signals: Signals) -> str:
        current = self.current
        if current is None:
            return "look straight at the camera"
        satisfied = {
            Challenge.BLINK: self._blink,
            Challenge.OPEN_MOUTH: self._mouth,
            Challenge.TURN_LEFT: lambda s: self._turn(s, +1.0),
            Challenge.TURN_RIGHT: lambda s: self._turn(s, -1.0),
        }[current](signals)
        if not satisfied:
            return self._hint(current)
        self._done.append(current)
        self._step = _Step()
        log.debug("liveness session %s: %s done", self.id, current)
        if self.current is None:
            self._final_check = True
            return "look straight at the camera"
        return INSTRUCTIONS[self.current]

    def _hint(self, current: Challenge) -> str:
        if current in TURNS and self._flat_turns:
            return f"{INSTRUCTIONS[current]}: turn your head itself, not the picture"
        return INSTRUCTIONS[current]

    def _blink(self, signals: Signals) -> bool:
        """Open → closed → open, relative to this person's own open-eye level in this session."""
        baseline = self._baseline_ear()
        if baseline is None:
            return False
        if signals.ear >= self.bounds.eye_open * baseline:
            if self._step.closed:
                return True
            self._step.primed = True
        elif signals.ear <= self.bounds.eye_closed * baseline and self._step.primed:
            self._step.closed = True
        return False

    def _mouth(self, signals: Signals) -> bool:
        """Closed → open: a photo of an open mouth never shows it closed first."""
        if signals.mar <= self.bounds.mouth_closed:
            self._step.primed = True
        return self._step.primed and signals.mar >= self.bounds.mouth_open

    def _turn(self, signals: Signals, direction: float) -> bool:
        """Far enough in the asked direction, and off the plane of the reference frame."""
        if direction * signals.yaw < self.bounds.turn_yaw or signals.residual is None:
            return False
        if signals.residual >= self.bounds.planar_residual:
            return True
        self._flat_turns += 1
        return False

    def _pending_message(self, cause: str) -> str:
        pending = [INSTRUCTIONS[c] for c in self.challenges[len(self._done) :]]  # words, not codes
        left = ", ".join(pending) if pending else "a final frontal frame"
        return (
            f"{cause} with {len(self._done)} of {len(self.challenges)} challenges done (still to do: {left})"
        )

    def _fail(self, reason: Reason, message: str) -> Verdict:
        reasons, messages = [reason], [message]
        if self._frames_with_face == 0:
            reasons.append(Reason.NO_FACE)
            messages.append("no face was seen in any frame")
        elif self._reference is None:
            reasons.append(Reason.NO_FRONTAL_FACE)
            messages.append("the face never looked straight at the camera")
        if self._flat_turns:
            reasons.append(Reason.FLAT_MOTION)
            messages.append(
                f"{self._flat_turns} turned frame(s) moved like a flat picture (out-of-plane residual "
                f"under {self.bounds.planar_residual:.3f})"
            )
        self.verdict = Verdict(
            live=False,
            score=0.0 if reason in _HARD_FAILURES else len(self._done) / (len(self.challenges) + 1),
            reasons=tuple(reasons),
            messages=tuple(messages),
            completed=tuple(self._done),
            best=None,
        )
        log.info("liveness session %s failed: %s", self.id, ", ".join(reasons))
        return self.verdict

    def _pass(self) -> None:
        self.verdict = Verdict(
            live=True, score=1.0, reasons=(), messages=(), completed=tuple(self._done), best=self._best
        )
        log.info("liveness session %s passed (%s)", self.id, ", ".join(self.challenges))


# Evidence of an attack rather than of a person too slow: the score says nothing was achieved.
_HARD_FAILURES = frozenset({Reason.MULTIPLE_FACES, Reason.FACE_JUMPED, Reason.IDENTITY_CHANGED})
