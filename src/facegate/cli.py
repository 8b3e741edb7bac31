"""`facegate` command line: serve the API and UI, and detect, enrol and recognise from files."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from facegate.api.logs import CHATTY_LOGGERS, chatty_level
from facegate.config import Settings, get_settings
from facegate.faces import DEFAULT_DETECTION

if TYPE_CHECKING:
    from facegate.detection import Detector

logger = logging.getLogger("facegate")

_WS_FRAME_SLACK = 1 << 20
_KEY_ANNOUNCED = "--key-announced"
# How long a start waits for its port to be free (workers of a killed supervisor shutting down).
_PORT_WAIT_S = 40.0
_WORKERS_HELP = "API worker processes (default: WEB_CONCURRENCY, else one per two CPU cores)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty_level(settings.log_level))
    return args.handler(args, settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegate", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the REST API")
    _add_server_args(serve, port=8000)
    serve.add_argument("--workers", type=_positive, help=_WORKERS_HELP)
    # `facegate up` has told the user where the key is already.
    serve.add_argument(_KEY_ANNOUNCED, action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    ui = commands.add_parser("ui", help="run the Streamlit web UI")
    _add_server_args(ui, port=8501)
    ui.set_defaults(handler=_ui)

    up = commands.add_parser("up", help="run the API and the UI together on the embedded database")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--api-port", type=int, default=8000)
    up.add_argument("--ui-port", type=int, default=8501)
    up.add_argument("--workers", type=_positive, help=_WORKERS_HELP)
    up.set_defaults(handler=_up)

    detect = commands.add_parser("detect", help="detect faces in image files")
    detect.add_argument("images", nargs="+", type=Path)
    detect.add_argument("--json", action="store_true", help="print one JSON object per image")
    detect.add_argument(
        "--annotate", type=Path, metavar="OUT", help="write annotated copies into this folder"
    )
    detect.add_argument("--min-face-size", type=int, default=DEFAULT_DETECTION.min_face_size)
    detect.add_argument("--threshold-pnet", type=float, default=DEFAULT_DETECTION.threshold_pnet)
    detect.add_argument("--threshold-rnet", type=float, default=DEFAULT_DETECTION.threshold_rnet)
    detect.add_argument("--threshold-onet", type=float, default=DEFAULT_DETECTION.threshold_onet)
    detect.set_defaults(handler=_detect)

    enroll = commands.add_parser(
        "enroll", help="register people from a folder with one sub-folder per person"
    )
    enroll.add_argument("folder", type=Path)
    _add_collection_arg(enroll)
    enroll.add_argument(
        "--report", type=Path, metavar="FILE", help="also write each skipped photo and why to this CSV file"
    )
    enroll.add_argument(
        "--pick",
        choices=["center"],
        help="in a photo of several faces of similar size, take the one nearest the centre (reported) "
        "instead of skipping the photo",
    )
    enroll.set_defaults(handler=_enroll)

    recognize = commands.add_parser(
        "recognize", help="recognise the faces in image files against the gallery"
    )
    recognize.add_argument("images", nargs="+", type=Path)
    _add_collection_arg(recognize)
    recognize.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="a fixed cosine-distance threshold (default: chosen for FACE_MATCH_FPIR at the gallery's size)",
    )
    recognize.set_defaults(handler=_recognize)

    events = commands.add_parser(
        "events", help="the access log: recognition decisions, newest first (see README, Access log)"
    )
    events.add_argument(
        "--since", type=datetime.fromisoformat, help="from this time (ISO 8601, e.g. 2026-12-01)"
    )
    events.add_argument("--until", type=datetime.fromisoformat, help="before this time (ISO 8601)")
    events.add_argument("--collection", help="one collection (default: every one)")
    events.add_argument("--status", choices=["match", "no_match", "low_quality"])
    events.add_argument("--person", type=_positive, help="the matched person's id")
    events.add_argument("--source", choices=["recognize", "stream", "liveness"])
    events.add_argument(
        "--limit", type=_positive, default=50, help="at most this many (default: %(default)s; --csv: all)"
    )
    events.add_argument("--csv", action="store_true", help="every matching event as CSV on stdout")
    events.set_defaults(handler=_events)

    export = commands.add_parser(
        "export", help="write a collection's people and embeddings to a file (biometric data: protect it)"
    )
    export.add_argument("file", type=Path)
    _add_collection_arg(export)
    export.set_defaults(handler=_export)

    load = commands.add_parser("import", help="merge an export file into a collection, by name")
    load.add_argument("file", type=Path)
    load.add_argument(
        "--collection", default=None, help="the collection to merge into (default: the one exported)"
    )
    load.set_defaults(handler=_import)

    fetch = commands.add_parser(
        "fetch-models",
        help="download the model files of npm packages into FACEGATE_MODEL_DIR, checked (set-up does this)",
    )
    fetch.set_defaults(handler=_fetch_models)

    reembed = commands.add_parser(
        "reembed",
        help="move the gallery to the configured model (FACE_EMBEDDER) by embedding its face chips again",
    )
    reembed.add_argument(
        "--batch-size", type=_positive, default=64, help="faces per committed batch (default: %(default)s)"
    )
    reembed.set_defaults(handler=_reembed)
    return parser


# facegate.gallery.DEFAULT_COLLECTION, not imported here: the CLI starts without the database's
# libraries (tests/test_cli.py checks the two agree).
_DEFAULT_COLLECTION = "default"


def _add_collection_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--collection", default=_DEFAULT_COLLECTION, help="the collection (default: %(default)s)"
    )


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _add_server_args(parser: argparse.ArgumentParser, *, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)


# --- servers -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    _check_model_files(settings)
    if not args.key_announced:
        _announce_key(settings)
    workers = args.workers or settings.workers()
    # Each worker reads its settings afresh (with one worker, in this process): the worker count
    # decides its share of the cores for ONNX Runtime (Settings.session_threads).
    os.environ["WEB_CONCURRENCY"] = str(workers)
    get_settings.cache_clear()
    logger.info("%d worker(s), %d ONNX Runtime thread(s) each", workers, get_settings().session_threads())
    # With one worker uvicorn serves in this process and, once shut down, raises the SIGTERM it
    # caught again: as SystemExit it unwinds the clean-ups below (stopping the embedded PostgreSQL)
    # instead of killing the process on the spot (`docker stop`, systemd).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    # Before the database: a start that cannot listen must not start (nor, leaving, stop) the
    # PostgreSQL that a server still running on the port uses.
    _wait_for_port(args.host, args.port)
    with _shared_database(settings):
        _run_uvicorn(args, settings, workers)
    return 0


def _check_model_files(settings: Settings) -> None:
    """Refuse to start, in one line saying the fix, when the embedder's model file is missing or damaged."""
    from facegate.embedding.factory import check_model_files
    from facegate.embedding.npm_models import ModelFileError

    try:
        check_model_files(settings)
    except ModelFileError as exc:
        raise SystemExit(f"facegate: {exc}") from None


def _fetch_models(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.embedding.npm_models import MODELS, ModelFileError, fetch

    try:
        for model in MODELS:
            path = fetch(model, settings.facegate_model_dir)
            logger.info("%s (npm %s): %s, sha256 checked", model.filename, model.spec, path)
    except ModelFileError as exc:
        raise SystemExit(f"facegate fetch-models: {exc}") from None
    return 0


def _wait_for_port(host: str, port: int) -> None:
    """Return once `host:port` can be bound, waiting out the workers of a killed supervisor.

    Those exit on their own (facegate.api.connections.exit_with_supervisor), within uvicorn's
    graceful shutdown; past _PORT_WAIT_S the port belongs to something else.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + _PORT_WAIT_S
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        logger.info("%s:%d is in use; waiting up to %.0f s for it to be free", host, port, _PORT_WAIT_S)
        time.sleep(1)


@contextmanager
def _shared_database(settings: Settings) -> Iterator[None]:
    """Start the embedded PostgreSQL once, here, and hand its DSN to every worker.

    The workers then never start or stop it themselves; this process stops it when the last worker
    has exited (unless another process, say `facegate enroll`, still uses it).
    """
    from facegate.gallery import database_dsn

    with database_dsn(settings) as dsn:
        os.environ["DATABASE_URL"] = dsn
        get_settings.cache_clear()
        yield


def _run_uvicorn(args: argparse.Namespace, settings: Settings, workers: int) -> None:
    import uvicorn

    from facegate.api.connections import GuardedHttpProtocol
    from facegate.api.logs import server_logging_config

    protocol = partial(
        GuardedHttpProtocol, header_timeout=settings.header_timeout, max_connections=settings.max_connections
    )
    uvicorn.run(
        "facegate.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        http=protocol,  # type: ignore[arg-type]  # uvicorn calls it like a protocol class
        # By then every HTTP request has its answer (504 at REQUEST_TIMEOUT); sockets are closed.
        timeout_graceful_shutdown=round(settings.request_timeout),
        # A frame a little over MAX_UPLOAD_BYTES gets the stream's 413 message; a far larger one
        # is cut by the protocol (close code 1009) before it is read.
        ws_max_size=settings.max_upload_bytes + _WS_FRAME_SLACK,
        log_level=settings.log_level.lower(),
        log_config=server_logging_config(settings.log_level),
        access_log=False,  # the app logs each request itself, with its request id and route
    )


def _ui(args: argparse.Namespace, settings: Settings) -> int:
    # Streamlit replaces this process rather than running under it: as a container's PID 1, a
    # waiting parent would ignore the SIGTERM of `docker stop` and be killed 10 s later.
    command = _streamlit_command(args.host, args.port, settings)
    os.execv(command[0], command)


def _streamlit_command(host: str, port: int, settings: Settings) -> list[str]:
    app = Path(__file__).parent / "ui" / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host, "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        # The UI forwards uploads to the API: refuse in the browser what the API would refuse.
        "--server.maxUploadSize", str(max(1, settings.max_upload_bytes // 2**20)),
        "--client.toolbarMode", "viewer", "--server.fileWatcherType", "none",
    ]  # fmt: skip


def _up(args: argparse.Namespace, settings: Settings) -> int:
    """API and UI as two child processes; Ctrl-C or SIGTERM stops both."""
    _check_model_files(settings)
    _announce_key(settings)
    api_url = f"http://{args.host}:{args.api_port}"
    api_command = [sys.executable, "-m", "facegate", "serve", "--host", args.host]
    api_command += ["--port", str(args.api_port), _KEY_ANNOUNCED]
    if args.workers:
        api_command += ["--workers", str(args.workers)]
    ui_command = _streamlit_command(args.host, args.ui_port, settings)
    logger.info("API: %s (docs at %s/docs)   UI: http://%s:%d", api_url, api_url, args.host, args.ui_port)
    return _supervise([api_command, ui_command], {**os.environ, "API_URL": api_url})


def _supervise(commands: list[list[str]], env: dict[str, str]) -> int:
    """Run `commands` as children until one exits, Ctrl-C or SIGTERM; then stop them all.

    Without this a SIGTERM ends only this process, and its children keep running and keep their
    ports (`docker stop`, systemd and `kill` all send SIGTERM).
    """
    signal.signal(signal.SIGTERM, _interrupt)
    children = [subprocess.Popen(command, env=env) for command in commands]
    try:
        while all(child.poll() is None for child in children):
            try:
                children[0].wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        _stop(children)
    return max((child.returncode or 0) for child in children)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _announce_key(settings: Settings) -> None:
    generated = settings.api_key() is None
    settings.ensure_api_key()
    if settings.app_token:
        logger.info("API key: the APP_TOKEN environment variable")
    else:
        logger.info(
            "API key%s: in %s (send it as the X-API-Key header)",
            " generated" if generated else "",
            settings.api_key_file,
        )


# --- files ---------------------------------------------------------------------------------------


def _detect(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.pipeline import create_detector

    with create_detector(settings) as detector:
        return _detect_files(args, detector)


def _detect_files(args: argparse.Namespace, detector: Detector) -> int:
    from PIL import Image

    from facegate.annotate import draw_faces
    from facegate.faces import DetectionParams, detection_dict
    from facegate.imaging import ImageError, load_image_file

    params = DetectionParams(
        args.min_face_size, args.threshold_pnet, args.threshold_rnet, args.threshold_onet
    )
    failures = 0
    for path in args.images:
        try:
            image = load_image_file(path)
            faces = detector.detect(image, params)  # ImageError too: over the detection budget
        except (OSError, ImageError) as exc:
            logger.error("%s: %s", path, exc)
            failures += 1
            continue
        if args.json:
            print(json.dumps({"path": str(path), **detection_dict(faces)}))
        else:
            print(f"{path}: {len(faces)} face(s)")
            for face in faces:
                box = ", ".join(f"{v:.0f}" for v in face.box)
                print(f"  [{box}] score {face.score:.3f}")
        if args.annotate:
            args.annotate.mkdir(parents=True, exist_ok=True)
            drawn = draw_faces(
                Image.fromarray(image),
                [f.box for f in faces],
                [f.keypoints_dict() for f in faces],
                [f"{f.score:.2f}" for f in faces],
            )
            drawn.save(args.annotate / f"{path.stem}.png")
    return 1 if failures else 0


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.enroll import enroll_folder

    return _gallery_command(
        lambda: enroll_folder(
            args.folder, settings, args.report, args.collection, pick_center=args.pick == "center"
        )
    )


def _recognize(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.enroll import recognize_files

    return _gallery_command(lambda: recognize_files(args.images, settings, args.threshold, args.collection))


def _events(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.enroll import print_events
    from facegate.events import EventFilter

    which = EventFilter(
        None if args.collection is None else frozenset({args.collection}),
        _aware(args.since),
        _aware(args.until),
        args.status,
        args.person,
        args.source,
    )
    return _gallery_command(lambda: print_events(settings, which, None if args.csv else args.limit))


def _aware(moment: datetime | None) -> datetime | None:
    """A time given without a zone is the machine's local time."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.astimezone()


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.enroll import export_collection

    return _gallery_command(lambda: export_collection(settings, args.file, args.collection))


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.enroll import import_collection

    return _gallery_command(lambda: import_collection(settings, args.file, args.collection))


def _reembed(args: argparse.Namespace, settings: Settings) -> int:
    from facegate.enroll import reembed_gallery

    return _gallery_command(lambda: reembed_gallery(settings, args.batch_size))


def _gallery_command(run: Callable[[], int]) -> int:
    """`run`, with the gallery's refusals (an unknown collection, a damaged export file) said in one
    line and exit status 2 instead of a traceback."""
    from facegate.gallery import GalleryError

    try:
        return run()
    except (GalleryError, OSError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
