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
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum, auto

import numpy as np

from facegate.config import Settings
from facegate.faces import Face
from facegate.liveness.planarity import planar_residual
from facegate.liveness.signals import eye_aspect_ratio, mouth_aspect_ratio, yaw_index
from facegate.recognition import MatchPolicy, cosine_distance

log = logging.getLogger(__name__)


class Challenge(StrEnum):
    BLINK = "blink"
    TURN_LEFT = "turn_left"  # the person's own left: the nose moves to image right (unmirrored)
    TURN_RIGHT = "turn_right"
    OPEN_MOUTH = "open_mouth"


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


# dlib's one-to-one threshold, and the bound for a turned frame against the frontal one that
# benchmarks/liveness_calibrate.py measured with dlib; as a false-match rate (dlib's curve at 0.12),
# the turned bound carries over to every calibrated model: loose, as a turned face is far from a
# frontal one, but still far from the distances between different people's faces.
DLIB_VERIFY_THRESHOLD = 0.086
DLIB_TURNED_THRESHOLD = 0.12
TURNED_FMR = 0.116

# The settings' defaults, so that a `LivenessLimits()` in a test or benchmark checks what the service does.
_DEFAULT = {name: info.default for name, info in Settings.model_fields.items()}


@dataclass(frozen=True, slots=True)
class LivenessLimits:
    """Every threshold and limit of the check; those that are settings default to the settings'
    defaults (the service fills them from `Settings`: `LivenessLimits.from_settings`)."""

    planar_residual: float = _DEFAULT["liveness_planar_residual"]  # out-of-plane residual a turn needs
    turn_yaw: float = _DEFAULT["liveness_turn_yaw"]  # yaw index a turn must reach
    frontal_yaw: float = 0.12  # |yaw index| of a frontal frame
    eye_closed: float = 0.65  # eye aspect ratio below this fraction of the open baseline: closed
    eye_open: float = 0.85  # ... above this fraction: open again
    mouth_closed: float = 0.25  # mouth aspect ratio of a closed mouth (lips apart in a smile: ~0.2)
    mouth_open: float = 0.5  # ... of an open one
    max_jump: float = 0.5  # box centre moving more than this many box widths between frames
    max_scale_change: float = 1.5  # box width changing by more than this factor between frames
    # Identity bounds in dlib's distances (what `from_settings` puts there for the configured model):
    match_threshold: float = DLIB_VERIFY_THRESHOLD  # distance from the first neutral frame
    turned_match_threshold: float = DLIB_TURNED_THRESHOLD  # ... from a turned frame
    timeout_s: float = _DEFAULT["liveness_timeout"]
    max_frames: int = _DEFAULT["liveness_max_frames"]

    @classmethod
    def from_settings(cls, settings: Settings, policy: MatchPolicy) -> LivenessLimits:
        """The settings' limits, and the identity bounds of the model `policy` decides for."""
        return cls(
            planar_residual=settings.liveness_planar_residual,
            turn_yaw=settings.liveness_turn_yaw,
            match_threshold=policy.verify_threshold,  # one-to-one: the same face as at the start
            turned_match_threshold=policy.distance_at_fmr(TURNED_FMR, DLIB_TURNED_THRESHOLD),
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


class Step(Enum):
    """What one frame did for the current challenge."""

    PENDING = auto()
    DONE = auto()
    FLAT = auto()  # a turn far enough, but moving like a flat picture


class ChallengeCheck(ABC):
    """Progress inside one challenge, made fresh when the challenge starts: the "before" state
    each one needs first lives here."""

    @abstractmethod
    def step(self, signals: Signals, limits: LivenessLimits, open_ear: float | None) -> Step:
        """Advance on one face frame; `open_ear` is this person's open-eye level (None: not known yet)."""


@dataclass
class Blink(ChallengeCheck):
    """Open → closed → open, relative to this person's own open-eye level in this session."""

    opened: bool = False
    closed: bool = False  # seen closed after being open

    def step(self, signals: Signals, limits: LivenessLimits, open_ear: float | None) -> Step:
        if open_ear is None:
            return Step.PENDING
        if signals.ear >= limits.eye_open * open_ear:
            if self.closed:
                return Step.DONE
            self.opened = True
        elif signals.ear <= limits.eye_closed * open_ear and self.opened:
            self.closed = True
        return Step.PENDING


@dataclass
class OpenMouth(ChallengeCheck):
    """Closed → open: a photo of an open mouth never shows it closed first."""

    closed: bool = False  # seen closed within this challenge

    def step(self, signals: Signals, limits: LivenessLimits, open_ear: float | None) -> Step:
        if signals.mar <= limits.mouth_closed:
            self.closed = True
        return Step.DONE if self.closed and signals.mar >= limits.mouth_open else Step.PENDING


@dataclass
class Turn(ChallengeCheck):
    """Far enough in the asked direction (+1: yaw index up), and off the plane of the reference frame."""

    direction: float

    def step(self, signals: Signals, limits: LivenessLimits, open_ear: float | None) -> Step:
        if self.direction * signals.yaw < limits.turn_yaw or signals.residual is None:
            return Step.PENDING
        return Step.DONE if signals.residual >= limits.planar_residual else Step.FLAT


@dataclass(frozen=True, slots=True)
class ChallengeRule:
    """One challenge: what the person is told, and how frames are checked against it."""

    instruction: str  # what the person is asked, in words
    check: Callable[[], ChallengeCheck]  # a fresh check for each time the challenge starts
    turn: bool = False  # a head turn: where the flat-picture check applies


# Every challenge, in one table: a new one is a `Challenge` member and its rule here.
RULES: dict[Challenge, ChallengeRule] = {
    Challenge.BLINK: ChallengeRule("blink", Blink),
    Challenge.TURN_LEFT: ChallengeRule("turn your head to your left", lambda: Turn(+1.0), turn=True),
    Challenge.TURN_RIGHT: ChallengeRule("turn your head to your right", lambda: Turn(-1.0), turn=True),
    Challenge.OPEN_MOUTH: ChallengeRule("open your mouth", OpenMouth),
}
TURNS = tuple(challenge for challenge, rule in RULES.items() if rule.turn)


def draw_challenges(rng: random.Random) -> tuple[Challenge, ...]:
    """Two or three distinct challenges in random order, at least one of them a turn: the turn is
    where the flat-photo check applies, so no sequence can be passed without it."""
    turn = rng.choice(TURNS)
    others = [c for c in Challenge if c not in TURNS] + [t for t in TURNS if t is not turn]
    chosen = [turn, *rng.sample(others, rng.choice((1, 2)))]
    rng.shuffle(chosen)
    return tuple(chosen)


class Phase(StrEnum):
    """Where a session stands; it only moves forward."""

    AWAITING_REFERENCE = "awaiting_reference"  # no neutral frontal frame yet: nothing to compare with
    CHALLENGES = "challenges"  # the challenges, in order
    FINAL_FRONTAL = "final_frontal"  # all done: a last neutral frame, of the same face, passes
    DONE = "done"  # the verdict is set


@dataclass
class Session:
    challenges: tuple[Challenge, ...]
    limits: LivenessLimits = field(default_factory=LivenessLimits)
    clock: Callable[[], float] = time.monotonic
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def __post_init__(self) -> None:
        if not self.challenges:
            raise ValueError("a session needs at least one challenge")
        self.started = self.clock()
        self.phase = Phase.AWAITING_REFERENCE
        self.verdict: Verdict | None = None
        self._done: list[Challenge] = []
        self._check = RULES[self.challenges[0]].check()
        self._frames = 0
        self._frames_with_face = 0
        self._flat_turns = 0
        self._open_eyes: list[float] = []
        self._reference: Observation | None = None
        self._best: Observation | None = None
        self._best_yaw = np.inf
        self._last_face: Face | None = None

    @classmethod
    def start(
        cls,
        limits: LivenessLimits,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Session:
        """A session with a fresh random challenge sequence (from the system's entropy by default)."""
        return cls(draw_challenges(rng or random.SystemRandom()), limits, clock)

    @property
    def deadline(self) -> float:
        return self.started + self.limits.timeout_s

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
        if self.phase is Phase.DONE:
            raise SessionClosed(f"session {self.id} has ended; start a new one")
        self._frames += 1
        if self.clock() > self.deadline:
            self.expire()
            return self._progress(observation.faces > 0, "time is up", None)
        if self._frames > self.limits.max_frames:
            self._fail(
                Reason.FRAME_LIMIT, self._pending_message(f"more than {self.limits.max_frames} frames")
            )
            return self._progress(observation.faces > 0, "too many frames", None)
        if observation.faces > 1:
            self._fail(Reason.MULTIPLE_FACES, f"{observation.faces} faces in one frame; only one may be seen")
            return self._progress(True, "only one person may be in view", None)
        if observation.face is None or observation.landmarks is None:
            return self._progress(False, "no face found: look at the camera", None)
        self._frames_with_face += 1
        return self._face_frame(observation, observation.face, observation.landmarks)

    def _face_frame(self, observation: Observation, face: Face, points: np.ndarray) -> Progress:
        if self._jumped(face):
            self._fail(Reason.FACE_JUMPED, "the face jumped to another place between two frames")
            return self._progress(True, "keep your face in view", None)
        self._last_face = face
        reference = None if self._reference is None else self._reference.landmarks
        signals = Signals(
            ear=eye_aspect_ratio(points),
            mar=mouth_aspect_ratio(points),
            yaw=yaw_index(points),
            residual=None if reference is None else planar_residual(reference, points),
        )
        if self._is_plain(signals):
            if mismatch := self._identity_mismatch(observation, signals):
                self._fail(Reason.IDENTITY_CHANGED, mismatch)
                return self._progress(True, "a different face appeared", signals)
            self._keep_plain(observation, signals)
        hint = "look straight at the camera"
        if self.phase is Phase.CHALLENGES:
            hint = self._advance(signals)
        if self.phase is Phase.FINAL_FRONTAL and self._is_neutral(signals):
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
        return shift > self.limits.max_jump * width or scale > self.limits.max_scale_change

    def _baseline_ear(self) -> float | None:
        return float(np.median(self._open_eyes)) if self._open_eyes else None

    def _is_frontal(self, signals: Signals) -> bool:
        return abs(signals.yaw) <= self.limits.frontal_yaw

    def _is_plain(self, signals: Signals) -> bool:
        """Eyes not closed and mouth not open: the frames whose identity is compared."""
        baseline = self._baseline_ear()
        eyes_open = baseline is None or signals.ear >= self.limits.eye_open * baseline
        return eyes_open and signals.mar < self.limits.mouth_open

    def _is_neutral(self, signals: Signals) -> bool:
        """A plain frontal frame: the reference, the best and the final frame are such frames."""
        return self._is_plain(signals) and self._is_frontal(signals)

    def _identity_mismatch(self, observation: Observation, signals: Signals) -> str | None:
        """Why this plain frame is not the person of the reference frame, or None: within the
        verification threshold of it, or a looser one when the head is turned (the embedding
        drifts with the pose)."""
        if self._reference is None or observation.embedding is None or self._reference.embedding is None:
            return None
        frontal = self._is_frontal(signals)
        threshold = self.limits.match_threshold if frontal else self.limits.turned_match_threshold
        distance = cosine_distance(observation.embedding, self._reference.embedding)
        if distance <= threshold:
            return None
        return f"not the face the session started with (distance {distance:.3f} > {threshold:.3f})"

    def _keep_plain(self, observation: Observation, signals: Signals) -> None:
        """Record a plain frame of the right person: the first frontal one is the reference (the
        challenges start), frontal ones give the open-eye level, the most frontal is kept for
        recognition."""
        if not self._is_frontal(signals):
            return
        if self._reference is None:
            self._reference = observation
            self.phase = Phase.CHALLENGES
        self._open_eyes.append(signals.ear)
        if abs(signals.yaw) < self._best_yaw:
            self._best, self._best_yaw = observation, abs(signals.yaw)

    def _advance(self, signals: Signals) -> str:
        """The current challenge on this frame; the hint for the next frame."""
        current = self.current
        assert current is not None  # in the challenges phase
        step = self._check.step(signals, self.limits, self._baseline_ear())
        if step is Step.FLAT:
            self._flat_turns += 1
        if step is not Step.DONE:
            return self._hint(current)
        self._done.append(current)
        log.debug("liveness session %s: %s done", self.id, current)
        following = self.current
        if following is None:
            self.phase = Phase.FINAL_FRONTAL
            return "look straight at the camera"
        self._check = RULES[following].check()
        return RULES[following].instruction

    def _hint(self, current: Challenge) -> str:
        rule = RULES[current]
        if rule.turn and self._flat_turns:
            return f"{rule.instruction}: turn your head itself, not the picture"
        return rule.instruction

    def _pending_message(self, cause: str) -> str:
        pending = [RULES[c].instruction for c in self.challenges[len(self._done) :]]  # words, not codes
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
                f"under {self.limits.planar_residual:.3f})"
            )
        return self._end(
            Verdict(
                live=False,
                score=0.0 if reason in _HARD_FAILURES else len(self._done) / (len(self.challenges) + 1),
                reasons=tuple(reasons),
                messages=tuple(messages),
                completed=tuple(self._done),
                best=None,
            )
        )

    def _pass(self) -> None:
        self._end(
            Verdict(
                live=True, score=1.0, reasons=(), messages=(), completed=tuple(self._done), best=self._best
            )
        )

    def _end(self, verdict: Verdict) -> Verdict:
        self.verdict, self.phase = verdict, Phase.DONE
        if verdict.live:
            log.info("liveness session %s passed (%s)", self.id, ", ".join(self.challenges))
        else:
            log.info("liveness session %s failed: %s", self.id, ", ".join(verdict.reasons))
        return verdict


# Evidence of an attack rather than of a person too slow: the score says nothing was achieved.
_HARD_FAILURES = frozenset({Reason.MULTIPLE_FACES, Reason.FACE_JUMPED, Reason.IDENTITY_CHANGED})
