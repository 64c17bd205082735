"""The dashboard's routes: three pages, a JSON API with live events, uploads and the stems.

Pages (plain HTML/JS from ``static/``, no build step): ``/`` (drop files, queue, watched
folders, workers), ``/job/<id>`` (one job: its stems in a mixer, which models gave each,
pictures, downloads) and ``/models`` (the models, installed or not).
API: ``GET /api/session``, ``POST /api/login``, ``GET /api/jobs``,
``GET /api/jobs/<id>``, ``POST /api/jobs/<id>/retry``, ``POST /api/jobs/<id>/cancel``,
``GET /api/folders``, ``GET /api/workers``, ``GET /api/models`` (read without torch,
:mod:`bridge.models.listing`), ``GET /api/presets``;
``GET /api/events`` (server-sent events: the queue, or with ``?job=<id>`` one job, sent
whenever it changes; pages poll instead where the stream fails);
``POST /api/uploads?name=<file name>&model=&stems=&preset=&format=`` (the file as the
raw body: :mod:`bridge.dashboard.uploads`, :mod:`bridge.dashboard.intake`);
``GET /api/jobs/<id>/zip`` (a done job's stems: :mod:`bridge.dashboard.downloads`);
``POST /api/jobs/<id>/balance`` (``{"gains": {stem: gain}}``: the mixer's balance
rendered as a new stem set by a job, :mod:`bridge.pipeline.balance`).
Files: ``GET /files/<id>/<name>``, only for the stems and pictures the job's manifest
lists, opened once inside the job's stem folder and never through a link
(:mod:`bridge.dashboard.files`). Access rules: :mod:`bridge.dashboard.auth`; every POST
(uploads included) needs the page's origin and CSRF header.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.broker.channel import WorkerInfo
from bridge.dashboard.auth import CSRF_HEADER, Guard
from bridge.dashboard.downloads import zip_stream
from bridge.dashboard.files import OpenFile, OpenFileResponse, Refusal, StemFolder, open_folder
from bridge.dashboard.intake import SOURCE, JobDefaults, queue_upload, read_choices
from bridge.dashboard.uploads import UploadRefused, Uploads
from bridge.documents import parse_json
from bridge.effects.presets import list_presets
from bridge.errors import (
    BrokerError,
    JobError,
    JobNotFound,
    ModelError,
    OutputError,
    SettingsError,
)
from bridge.jobs.status_file import update_status
from bridge.jobs.store import Job, JobStore
from bridge.manifest import read_manifest
from bridge.models.listing import model_rows
from bridge.names import folder_name
from bridge.pipeline.spec import PRIORITY_INTERACTIVE, BalanceSettings, JobSpec
from bridge.watch.watcher import FolderHealth

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Jobs the queue page shows (newest first).
LISTED_JOBS = 200
#: How often the event stream looks for changes, and how long it stays quiet at most.
EVENT_CHECK_SECONDS = 0.25
EVENT_KEEPALIVE_SECONDS = 15.0
#: Bodies an upload may be sent as (the page sends octet-stream).
UPLOAD_TYPES = ("application/octet-stream", "audio/")
_SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self'; media-src 'self'; frame-ancestors 'none'",
    ),
]

Folders = Callable[[], Sequence[FolderHealth]]
Workers = Callable[[], Sequence[WorkerInfo]]


def create_app(
    *,
    store: JobStore,
    guard: Guard,
    folders: Folders,
    workers: Workers | None,
    uploads: Uploads,
    defaults: JobDefaults,
) -> Starlette:
    """The dashboard application.

    Args:
        store: The daemon's job store.
        guard: Who may read and change (see :mod:`bridge.dashboard.auth`).
        folders: The watched folders' health (the daemon's watcher).
        workers: The studio's live workers, or ``None`` without a broker.
        uploads: Where dropped files go, and how large they may be.
        defaults: The config's settings, which an upload's choices override.
    """
    api = _Api(store, guard, folders, workers, uploads, defaults)
    app = Starlette(
        routes=[
            Route("/", lambda request: FileResponse(STATIC / "index.html")),
            Route("/job/{job_id}", lambda request: FileResponse(STATIC / "job.html")),
            Route("/models", lambda request: FileResponse(STATIC / "models.html")),
            Mount("/static", StaticFiles(directory=STATIC)),
            Route("/api/session", api.session),
            Route("/api/login", api.login, methods=["POST"]),
            Route("/api/jobs", api.jobs),
            Route("/api/jobs/{job_id}", api.job),
            Route("/api/jobs/{job_id}/retry", api.retry, methods=["POST"]),
            Route("/api/jobs/{job_id}/cancel", api.cancel, methods=["POST"]),
            Route("/api/jobs/{job_id}/zip", api.zip),
            Route("/api/jobs/{job_id}/balance", api.balance, methods=["POST"]),
            Route("/api/jobs/{job_id}/original", api.original),
            Route("/api/folders", api.folders),
            Route("/api/workers", api.workers),
            Route("/api/models", api.models),
            Route("/api/presets", api.presets),
            Route("/api/events", api.events),
            Route("/api/uploads", api.upload, methods=["POST"]),
            Route("/files/{job_id}/{name:path}", api.file),
        ],
    )
    app.add_middleware(_GuardMiddleware, guard=guard)
    return app


class _Api:
    def __init__(
        self,
        store: JobStore,
        guard: Guard,
        folders: Folders,
        workers: Workers | None,
        uploads: Uploads,
        defaults: JobDefaults,
    ) -> None:
        self._store = store
        self._guard = guard
        self._folders = folders
        self._workers = workers
        self._uploads = uploads
        self._defaults = defaults

    def session(self, request: Request) -> Response:
        """What this browser may do, and the CSRF secret when it may read."""
        guard = self._guard
        credentials = _credentials(request, guard)
        signed_in = guard.signed_in(**credentials)
        can_read = guard.may_read(**credentials)
        token_exists = guard.token_exists()
        return JSONResponse(
            {
                "csrf": guard.csrf if can_read else None,
                "loopback": guard.loopback,
                "token_exists": token_exists,
                "signed_in": signed_in,
                "can_read": can_read,
                "can_change": signed_in or (guard.loopback and not token_exists),
                "upload_max_bytes": self._uploads.max_bytes,
            }
        )

    async def login(self, request: Request) -> Response:
        """Trade the token for a session cookie (a form on the page posts it)."""
        guard = self._guard
        if not guard.same_origin(
            host_header=request.headers.get("host", ""),
            origin=request.headers.get("origin"),
            referer=request.headers.get("referer"),
        ):
            return _error(403, "sign in from the dashboard's own page")
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        session = guard.sign_in(token) if isinstance(token, str) else None
        if session is None:
            log.info("dashboard: a sign-in with a wrong token was refused")
            return _error(401, "wrong token; see it again with: stembridge dashboard token")
        response = JSONResponse({"signed_in": True})
        response.set_cookie(guard.cookie, session, httponly=True, samesite="strict", path="/")
        return response

    def jobs(self, request: Request) -> Response:
        """The newest jobs, every state."""
        return JSONResponse(self._jobs_body())

    def _jobs_body(self) -> dict[str, Any]:
        return {"jobs": [_summary(job) for job in self._store.list(limit=LISTED_JOBS)]}

    def job(self, request: Request) -> Response:
        """One job with its settings, timings and stems (from its manifest)."""
        try:
            return JSONResponse(self._job_body(request.path_params["job_id"]))
        except JobNotFound as exc:
            return _error(404, str(exc))

    def _job_body(self, job_id: str) -> dict[str, Any]:
        job = self._store.get(job_id)
        manifest = _read_manifest(job)
        stems = []
        for stem in (manifest or {}).get("stems", []):
            stems.append(
                {
                    "name": stem["name"],
                    "audio": _file_url(job, stem["path"]),
                    "pictures": {kind: _file_url(job, n) for kind, n in _pictures(stem).items()},
                    "loudness_lufs": stem.get("loudness_lufs"),
                    "silent": stem.get("silent", False),
                    "made_by": _made_by((manifest or {}).get("model"), stem.get("sources")),
                }
            )
        return _finite(
            {
                **_summary(job),
                "spec": json.loads(job.spec.to_json()),
                # The device the job ran on (the spec may say "auto").
                "device": _device_used(manifest),
                "timings": (manifest or {}).get("timings", {}),
                "stems": stems,
                "original": f"/api/jobs/{job.id}/original" if manifest else None,
                "sample_rate": _sample_rate(manifest),
                "original_offset_seconds": _range_start(manifest),
            }
        )

    def retry(self, request: Request) -> Response:
        """Queue a failed or cancelled job again (same job, not a copy)."""
        try:
            job = self._store.retry(request.path_params["job_id"])
        except JobNotFound as exc:
            return _error(404, str(exc))
        except JobError as exc:
            return _error(409, str(exc))
        update_status(job)
        log.info("dashboard: job %s queued again", job.id)
        return JSONResponse(_summary(job))

    def cancel(self, request: Request) -> Response:
        """Cancel a job: at once if queued, at the worker's next step if running."""
        try:
            job = self._store.cancel(request.path_params["job_id"])
        except JobNotFound as exc:
            return _error(404, str(exc))
        if job.state == "cancelled":
            update_status(job)
        elif job.state != "running":
            return _error(409, f"job {job.id} is already {job.state}; nothing to cancel")
        log.info("dashboard: job %s cancelled (%s)", job.id, job.state)
        return JSONResponse(_summary(job))

    def folders(self, request: Request) -> Response:
        """The watched folders and their observers."""
        return JSONResponse({"folders": [dataclasses.asdict(f) for f in self._folders()]})

    def workers(self, request: Request) -> Response:
        """The studio's live workers (``broker: false`` without a broker)."""
        if self._workers is None:
            return JSONResponse({"broker": False, "workers": []})
        try:
            found = self._workers()
        except BrokerError as exc:
            return _error(503, str(exc))
        return JSONResponse({"broker": True, "workers": [dataclasses.asdict(w) for w in found]})

    def presets(self, request: Request) -> Response:
        """The effects presets an upload may choose (``stembridge presets list``)."""
        return JSONResponse(
            {
                "presets": [{"name": n, "origin": o} for n, _, o in list_presets()],
                "default": self._defaults.effects.preset,
            }
        )

    async def upload(self, request: Request) -> Response:
        """Take one file (the raw body) and queue its job with the choices in the query.

        The choices and the size are checked before the body is read; the body is
        streamed to disk and checked as audio (:mod:`bridge.dashboard.uploads`).
        """
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith(UPLOAD_TYPES):
            return _error(
                415, f"send the file as application/octet-stream, not {content_type or 'nothing'}"
            )
        query = dict(request.query_params)
        name = query.pop("name", "")
        try:
            if not name.strip():
                raise UploadRefused(400, "the upload has no file name (?name=)")
            choices = read_choices(
                query,
                self._defaults,
                models=await anyio.to_thread.run_sync(_model_names),
                presets={name for name, _, _ in list_presets()},
            )
            self._uploads.check_length(request.headers.get("content-length"))
            upload = await self._uploads.receive(request.stream(), client_name=name)
        except UploadRefused as exc:
            log.info("dashboard: refused the upload %r: %s", name, exc.message)
            return _error(exc.status, exc.message)
        except ClientDisconnect:
            log.info("dashboard: the upload %r stopped before its end; nothing kept", name)
            return _error(400, "the upload stopped before its end")
        try:
            job = await anyio.to_thread.run_sync(queue_upload, self._store, upload, choices)
        except BaseException:
            upload.discard()
            raise
        log.info("dashboard: job %s queued for the upload %s", job.id, upload.path)
        return JSONResponse(_summary(job), status_code=201)

    def original(self, request: Request) -> Response:
        """The mix a job separated (the mixer's A/B), opened as the stems are, not through
        a link; only once the job has stems."""
        try:
            job = self._store.get(request.path_params["job_id"])
        except JobNotFound as exc:
            return _error(404, str(exc))
        if not job.manifest:
            return _error(404, f"job {job.id} has no stems (yet), so no mix to compare")
        source = Path(job.spec.input)
        folder = open_folder(source.parent)
        if isinstance(folder, Refusal):
            return _error(folder.status, folder.message)
        with folder:
            opened = folder.open(source.name)
        if isinstance(opened, Refusal):
            return _error(opened.status, opened.message)
        return OpenFileResponse(opened)

    async def balance(self, request: Request) -> Response:
        """Queue the mixer's balance of a done job (``{"gains": {stem: gain}}``) as a job
        that renders it as a new stem set beside the job's (:mod:`bridge.pipeline.balance`)."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        gains = body.get("gains") if isinstance(body, dict) else None
        if not isinstance(gains, dict):
            return _error(400, 'send {"gains": {"<stem>": <gain>, ...}} as JSON')
        return await anyio.to_thread.run_sync(
            self._queue_balance, request.path_params["job_id"], gains
        )

    def _queue_balance(self, job_id: str, gains: dict[str, Any]) -> Response:
        try:
            job = self._store.get(job_id)
        except JobNotFound as exc:
            return _error(404, str(exc))
        if job.state != "done" or not job.manifest:
            return _error(409, f"job {job.id} is {job.state}; a balance is made of done stems")
        stems = Path(job.manifest).parent
        try:
            spec = JobSpec(
                input=job.spec.input,
                folder=str(stems.with_name(f"{stems.name} balance")),
                balance=BalanceSettings.from_gains(manifest=job.manifest, gains=gains),
                priority=PRIORITY_INTERACTIVE,
                source=SOURCE,
            )
        except SettingsError as exc:
            return _error(400, str(exc))
        queued, _ = self._store.submit(spec)
        update_status(queued)
        log.info("dashboard: job %s renders a balance of job %s", queued.id, job.id)
        return JSONResponse(_summary(queued), status_code=201)

    def zip(self, request: Request) -> Response:
        """A done job's stems, exactly those its manifest lists, as one streamed zip."""
        try:
            job = self._store.get(request.path_params["job_id"])
        except JobNotFound as exc:
            return _error(404, str(exc))
        if job.state != "done" or not job.manifest:
            return _error(
                409, f"job {job.id} is {job.state}; its stems can be taken once it is done"
            )
        manifest_path = Path(job.manifest)
        folder = open_folder(manifest_path.parent)
        if isinstance(folder, Refusal):
            return _error(folder.status, folder.message)
        opened: list[OpenFile] = []
        with folder:
            for name in _stem_files(folder, manifest_path):
                one = folder.open(name)
                if isinstance(one, Refusal):
                    for earlier in opened:
                        earlier.file.close()
                    return _error(one.status, one.message)
                opened.append(one)
        if not opened:
            return _error(404, f"job {job.id}'s manifest lists no stems")
        filename = folder_name(Path(job.spec.input).stem) + " stems.zip"
        return StreamingResponse(
            zip_stream(opened),
            media_type="application/zip",
            headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
        )

    async def events(self, request: Request) -> Response:
        """Server-sent events: ``queue`` (jobs, folders, workers), or ``job`` with
        ``?job=<id>``, each time it changes (and a comment now and then to keep it open)."""
        job_id = request.query_params.get("job")
        if job_id is not None:
            try:
                await anyio.to_thread.run_sync(self._store.get, job_id)
            except JobNotFound as exc:
                return _error(404, str(exc))
        kind = "queue" if job_id is None else "job"

        def snapshot() -> str:
            body = self._queue_body() if job_id is None else self._job_body(job_id)
            return json.dumps(body, separators=(",", ":"))

        async def stream() -> AsyncIterator[str]:
            last = None
            quiet = 0.0
            yield "retry: 2000\n\n"
            # uvicorn drops what is sent after the page went away without saying so: ask.
            while not await request.is_disconnected():
                data = await anyio.to_thread.run_sync(snapshot)
                if data != last:
                    last, quiet = data, 0.0
                    yield f"event: {kind}\ndata: {data}\n\n"
                elif quiet >= EVENT_KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield ": still here\n\n"
                await anyio.sleep(EVENT_CHECK_SECONDS)
                quiet += EVENT_CHECK_SECONDS

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def _queue_body(self) -> dict[str, Any]:
        workers: dict[str, Any] = {"broker": self._workers is not None, "workers": []}
        if self._workers is not None:
            try:
                workers["workers"] = [dataclasses.asdict(w) for w in self._workers()]
            except BrokerError as exc:
                workers["error"] = str(exc)
        return _finite(
            {
                **self._jobs_body(),
                "folders": [dataclasses.asdict(f) for f in self._folders()],
                "workers": workers,
            }
        )

    def models(self, request: Request) -> Response:
        """Every model StemBridge knows, installed or not (``stembridge models list``)."""
        try:
            return JSONResponse({"models": model_rows()})
        except ModelError as exc:
            log.info("dashboard: the models cannot be listed: %s", exc)
            return _error(500, str(exc))

    def file(self, request: Request) -> Response:
        """A stem or picture the job's manifest lists, from inside the job's stem folder.

        The folder, its manifest and the file are each opened once, never through a link,
        and the response reads the open file (see :mod:`bridge.dashboard.files`).
        """
        try:
            job = self._store.get(request.path_params["job_id"])
        except JobNotFound as exc:
            return _error(404, str(exc))
        name = request.path_params["name"]
        if "\0" in name:
            return _error(400, f"{name!r} is not a file name (it holds a NUL character)")
        if not job.manifest:
            return _error(404, f"job {job.id} has no stems (yet)")
        manifest_path = Path(job.manifest)
        folder = open_folder(manifest_path.parent)
        if isinstance(folder, Refusal):
            log.debug("dashboard: refused %r of job %s: %s", name, job.id, folder.message)
            return _error(folder.status, folder.message)
        with folder:
            listed = _listed_in(folder, manifest_path)
            if name not in listed:
                return _error(404, f"job {job.id} has no file {name!r}")
            opened = folder.open(name)
        if isinstance(opened, Refusal):
            log.debug("dashboard: refused %r of job %s: %s", name, job.id, opened.message)
            return _error(opened.status, opened.message)
        return OpenFileResponse(opened)


class _GuardMiddleware:
    """Refuses what :class:`Guard` does not allow, and adds security headers."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self._app = app
        self._guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        refusal = self._refusal(Request(scope))
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self._app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        guard = self._guard
        host = request.headers.get("host")
        if not guard.host_allowed(host):
            return PlainTextResponse(
                f"this dashboard does not answer to the host {host!r}", status_code=403
            )
        path = request.url.path
        guarded = path.startswith(("/api/", "/files/"))
        if not guarded or path in ("/api/session", "/api/login"):
            return None
        credentials = _credentials(request, guard)
        if request.method in ("GET", "HEAD"):
            if guard.may_read(**credentials):
                return None
            return _error(401, "sign in with the dashboard token (stembridge dashboard token)")
        reason = guard.may_change(
            host_header=host or "",
            origin=request.headers.get("origin"),
            referer=request.headers.get("referer"),
            csrf=request.headers.get(CSRF_HEADER),
            **credentials,
        )
        if reason is not None:
            log.info("dashboard: refused %s %s: %s", request.method, path, reason)
            return _error(403, reason)
        return None


def _credentials(request: Request, guard: Guard) -> dict[str, str | None]:
    return {
        "authorization": request.headers.get("authorization"),
        "session": request.cookies.get(guard.cookie),
    }


def _summary(job: Job) -> dict[str, Any]:
    name = Path(job.spec.input).name
    # A balance names the mix it came from, so that it is not taken for its separation.
    return {**job.to_dict(), "name": f"{name} (balance)" if job.spec.balance else name}


def _file_url(job: Job, name: str) -> str:
    return f"/files/{job.id}/{quote(name)}"


def _device_used(manifest: dict[str, Any] | None) -> str | None:
    """The device a job's manifest says it ran on; a hand-edited one may hold anything."""
    settings = (manifest or {}).get("settings")
    device = settings.get("device") if isinstance(settings, dict) else None
    return device if isinstance(device, str) else None


def _read_manifest(job: Job) -> dict[str, Any] | None:
    if not job.manifest:
        return None
    try:
        return read_manifest(Path(job.manifest))
    except OutputError:
        return None


def _sample_rate(manifest: dict[str, Any] | None) -> int | None:
    """The stems' rate (the mixer plays at it, so nothing is resampled), if it says one."""
    output = (manifest or {}).get("output")
    rate = output.get("sample_rate") if isinstance(output, dict) else None
    return rate if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0 else None


def _model_names() -> set[str]:
    """The models an upload may name (``models list``'s, installed or not).

    Raises:
        UploadRefused: The registry of imported models cannot be read.
    """
    try:
        return {row["name"] for row in model_rows()}
    except ModelError as exc:
        raise UploadRefused(500, str(exc)) from exc


def _range_start(manifest: dict[str, Any] | None) -> float:
    """Where in the input the stems begin, in seconds (0 for the whole file)."""
    part = (manifest or {}).get("range")
    start = part.get("start_seconds") if isinstance(part, dict) else None
    return float(start) if isinstance(start, int | float) and not isinstance(start, bool) else 0.0


def _listed_in(folder: StemFolder, manifest_path: Path) -> set[str]:
    """The files the manifest in the open ``folder`` lists (none when it is not one).

    Read through the open folder, so that the manifest and the files it lists come from
    the same folder even if its name is swapped meanwhile.
    """
    names = set()
    for stem in _manifest_stems(folder, manifest_path):
        names.add(stem["path"])
        names.update(_pictures(stem).values())
    # As read_manifest: one that lists a name outside its folder is trusted for none.
    return names if all(map(_stays_inside, names)) else set()


def _stem_files(folder: StemFolder, manifest_path: Path) -> list[str]:
    """The stem files (no pictures) the manifest in the open ``folder`` lists, in order."""
    names = [stem["path"] for stem in _manifest_stems(folder, manifest_path)]
    return names if all(map(_stays_inside, names)) else []


def _manifest_stems(folder: StemFolder, manifest_path: Path) -> list[dict[str, Any]]:
    raw = folder.read(manifest_path.name)
    if isinstance(raw, Refusal):
        return []
    try:
        manifest = parse_json(raw)
    except ValueError:
        return []
    stems = manifest.get("stems") if isinstance(manifest, dict) else None
    return [
        stem
        for stem in (stems if isinstance(stems, list) else [])
        if isinstance(stem, dict) and isinstance(stem.get("path"), str)
    ]


def _stays_inside(name: str) -> bool:
    forms = (PurePosixPath(name), PureWindowsPath(name))
    return bool(name) and "\0" not in name and not any(p.anchor or ".." in p.parts for p in forms)


def _made_by(model: object, sources: object) -> list[dict[str, Any]]:
    """Which models gave a stem, from the manifest's ``model``: one entry per model or
    ensemble, with the stem's sources it gave (an instrumental sums several sources, which
    routed stems may take from different models), in the stem's order.

    ``model.stems_from`` says it when several models ran (:meth:`Lineup.describe
    <bridge.models.lineup.Lineup.describe>`); without it ``model.name`` gave every source.
    A manifest edited by hand may hold anything there: what cannot be read is left out.
    """
    if not isinstance(model, dict):
        return []
    names = [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []
    if "stems_from" not in model:
        name = model.get("name")
        if not isinstance(name, str):
            return []
        return [{"sources": names, "models": [name], "ensemble": None, "weights": None}]
    stems_from = model["stems_from"]
    made_by: dict[str, dict[str, Any]] = {}
    for source in names:
        entry = stems_from.get(source) if isinstance(stems_from, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("models"), list):
            continue
        ensemble = entry.get("ensemble")
        giver: dict[str, Any] = {
            "models": [m for m in entry["models"] if isinstance(m, str)],
            "ensemble": ensemble if isinstance(ensemble, str) else None,
            "weights": _weights(entry.get("weights")),
        }
        if not giver["models"]:
            continue
        # The sources one model (or ensemble) gave are one entry.
        same = made_by.setdefault(json.dumps(giver), {"sources": [], **giver})
        same["sources"].append(source)
    return list(made_by.values())


def _weights(value: object) -> list[float] | None:
    """An ensemble's weights, or ``None`` (none given, or not finite numbers: JSON
    responses cannot hold NaN)."""
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        return None
    return [float(v) for v in value]


def _pictures(stem: dict[str, Any]) -> dict[str, str]:
    """A stem's pictures by kind; a manifest edited by hand may hold anything there."""
    pictures = stem.get("pictures")
    if not isinstance(pictures, dict):
        return {}
    return {kind: name for kind, name in pictures.items() if isinstance(name, str)}


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``: a manifest edited by hand may hold
    them, and JSON has no such numbers (the response could not be written)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
