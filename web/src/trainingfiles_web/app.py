"""The console's ASGI application: routes, pages, and what a service error becomes.

Every page asks the service with the signed-in user's token and shows what it answers;
the console keeps no data of its own but the builds it is following (`builds.py`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData, QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from trainingfiles.v1 import resources_pb2
from trainingfiles_client import (
    AsyncTrainingFilesClient,
    FailedPrecondition,
    Format,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Selector,
    Split,
    TrainingFilesError,
    Unauthenticated,
    Unavailable,
)

from . import present
from .builds import Builds, event_stream, owner_of
from .security import (
    CSRF_FIELD,
    Csrf,
    SecurityHeaders,
    clear_session,
    session_token,
    set_session,
)
from .service import Service
from .settings import WebSettings

PICKER_PAGE_SIZE = 25
MAX_PASTED_IDS = 1000

Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The application's state: settings, the shared client, builds, templates."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.csrf = Csrf(settings.csrf_secret, secure=settings.secure_cookies)
        self.builds = Builds(settings.build_retention_seconds)
        self.client: AsyncTrainingFilesClient | None = None
        environment = jinja2.Environment(
            loader=jinja2.PackageLoader("trainingfiles_web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        environment.filters["moment"] = present.moment
        environment.filters["status_name"] = present.status_name
        environment.filters["size"] = present.size
        self.templates = Jinja2Templates(env=environment)

    def service(self, request: Request) -> Service | None:
        token = session_token(request)
        if token is None or self.client is None:
            return None
        return Service(self.client, token)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        csrf_token, new_cookie = self.csrf.token_for(request)
        context = {
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token,
            "signed_in": session_token(request) is not None,
            "development_sign_in": self.settings.development_sign_in,
            **context,
        }
        response = self.templates.TemplateResponse(request, name, context, status_code)
        self.csrf.remember(response, new_cookie)
        return response

    def failure(self, request: Request, error: TrainingFilesError) -> Response:
        """A service error as a page: sign-in again, not found, or the service's words."""
        if isinstance(error, Unauthenticated):
            response = RedirectResponse("/signin?expired=1", status_code=303)
            clear_session(response, secure=self.settings.secure_cookies)
            return response
        status = 502
        if isinstance(error, NotFound):
            status = 404
        elif isinstance(error, PermissionDenied):
            status = 403
        elif isinstance(error, InvalidArgument):
            status = 400
        elif isinstance(error, FailedPrecondition):  # e.g. a pruned version's download
            status = 409
        elif isinstance(error, Unavailable):
            status = 503
        return self.render(
            request,
            "error.html",
            {"title": _error_title(status), "message": error.message, "reason": error.reason},
            status,
        )


def _error_title(status: int) -> str:
    return {
        403: "Not allowed",
        404: "Not found",
        400: "Bad request",
        409: "Not available",
        503: "Service unavailable",
    }.get(status, "The service refused")


def _safe_next(value: object, default: str) -> str:
    """Only a local path: never another site (an open redirect)."""
    if not isinstance(value, str):
        return default
    local = value.startswith("/") and not value.startswith("//") and "\\" not in value
    return value if local else default


def _uuid_or_none(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def create_app(settings: WebSettings) -> Starlette:
    console = Console(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        console.client = AsyncTrainingFilesClient(settings.target, token="")
        try:
            yield
        finally:
            await console.builds.close()
            await console.client.close(grace=1)

    def signed_in(handler: Callable[[Request, Service], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            service = console.service(request)
            if service is None:
                return RedirectResponse("/signin", status_code=303)
            try:
                return await handler(request, service)
            except TrainingFilesError as error:
                return console.failure(request, error)

        return wrapped

    async def checked_form(request: Request) -> FormData | Response:
        form = await request.form()
        if not console.csrf.valid(request, form.get(CSRF_FIELD)):
            return console.render(
                request,
                "error.html",
                {
                    "title": "Form expired",
                    "message": "This form was not sent by this page (or it has expired). "
                    "Reload the page and try again.",
                    "reason": "CSRF_TOKEN_INVALID",
                },
                403,
            )
        return form

    # ------------------------------------------------------------------ sign-in

    async def home(request: Request) -> Response:
        target = "/files" if session_token(request) else "/signin"
        return RedirectResponse(target, status_code=303)

    async def signin_page(request: Request) -> Response:
        context = {"expired": bool(request.query_params.get("expired")), "error": ""}
        return console.render(request, "signin.html", context)

    async def signin(request: Request) -> Response:
        form = await checked_form(request)
        if isinstance(form, Response):
            return form
        token = str(form.get("token", "")).strip().removeprefix("Bearer ").strip()
        error = ""
        if not token:
            error = "Paste an access token."
        elif console.client is not None:
            try:  # one cheap call tells whether the service accepts the token
                await Service(console.client, token).list_files(0, "", page_size=1)
            except TrainingFilesError as refused:
                error = f"The service refused this token: {refused.message}"
        if error:
            return console.render(request, "signin.html", {"expired": False, "error": error}, 401)
        response = RedirectResponse("/files", status_code=303)
        set_session(response, token, secure=settings.secure_cookies)
        return response

    async def signin_link(request: Request) -> Response:
        if not settings.development_sign_in:
            return console.render(
                request,
                "error.html",
                {"title": "Not found", "message": "No such page.", "reason": ""},
                404,
            )
        token = request.query_params.get("token", "")
        response = RedirectResponse("/files", status_code=303)
        if token:
            set_session(response, token, secure=settings.secure_cookies)
        return response

    async def signout(request: Request) -> Response:
        form = await checked_form(request)
        if isinstance(form, Response):
            return form
        response = RedirectResponse("/signin", status_code=303)
        clear_session(response, secure=settings.secure_cookies)
        return response

    # ------------------------------------------------------------------ files

    @signed_in
    async def files(request: Request, service: Service) -> Response:
        status_name = request.query_params.get("status", "")
        status = present.STATUS_BY_NAME.get(status_name, 0)
        page_token = request.query_params.get("page_token", "")
        page = await service.list_files(status, page_token)
        context = {
            "files": page.items,
            "next_page_token": page.next_page_token,
            "status": status_name if status else "",
            "statuses": list(present.STATUS_BY_NAME),
            "paged": bool(page_token),
        }
        return console.render(request, "files.html", context)

    @signed_in
    async def training_file(request: Request, service: Service) -> Response:
        file_id = request.path_params["file_id"]
        if _uuid_or_none(file_id) is None:
            raise NotFound("no such training file")
        members_token = request.query_params.get("members_page", "")
        found = await service.get_file(file_id)
        members = await service.members(file_id, members_token)
        versions = await service.versions(file_id)
        analytics, analytics_missing = await service.analytics(file_id)
        context = {
            "file": found,
            "status": present.status_name(found.status),
            "downloads": present.downloads(found),
            "charts": present.charts(found, analytics),
            "analytics_missing": analytics_missing,
            "members": members.items,
            "members_next": members.next_page_token,
            "members_paged": bool(members_token),
            "versions": [(v, present.version_downloads(v)) for v in versions],
            "version_reason": lambda value: (
                resources_pb2.VersionReason.Name(value).removeprefix("VERSION_REASON_").lower()
            ),
            "active": found.status == resources_pb2.TRAINING_FILE_STATUS_ACTIVE,
        }
        return console.render(request, "file.html", context)

    @signed_in
    async def download(request: Request, service: Service) -> Response:
        file_id = request.path_params["file_id"]
        try:
            fmt = Format.of(request.query_params.get("format", ""))
            split = Split.of(request.query_params.get("split", "all"))
            version = int(request.query_params.get("version", "0") or 0)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
        url = await service.download_url(file_id, fmt, split, version)
        return RedirectResponse(url, status_code=303)

    @signed_in
    async def archive(request: Request, service: Service) -> Response:
        form = await checked_form(request)
        if isinstance(form, Response):
            return form
        file_id = request.path_params["file_id"]
        await service.archive(file_id)
        return RedirectResponse(_safe_next(form.get("next"), f"/files/{file_id}"), status_code=303)

    # ------------------------------------------------------------------ create / add

    async def picker(
        request: Request,
        service: Service,
        values: QueryParams | FormData,
        *,
        refusal: TrainingFilesError | None = None,
        submitted: list[str] | None = None,
    ) -> Response:
        target = str(values.get("file", "") or "")
        filters = {
            key: str(values.get(key, "") or "").strip() for key in ("persona", "arc", "topic")
        }
        include_members = bool(values.get("include_members"))
        selected = _unique(str(v) for v in values.getlist("selected"))
        filter_errors = {k: "not an id" for k, v in filters.items() if v and not _uuid_or_none(v)}
        selector = None
        if any(filters.values()) and not filter_errors:
            selector = Selector(
                persona_ids=[filters["persona"]] if filters["persona"] else [],
                emotional_arc_ids=[filters["arc"]] if filters["arc"] else [],
                training_topic_ids=[filters["topic"]] if filters["topic"] else [],
            )
        exclude = target if target and not include_members else ""
        page_token = str(values.get("page_token", "") or "")
        page = await service.eligible(selector, exclude, page_token, PICKER_PAGE_SIZE)
        active = await service.list_files(resources_pb2.TRAINING_FILE_STATUS_ACTIVE, "", 100)
        offenders: dict[str, list[str]] = {}
        if refusal is not None:
            for violation in refusal.violations:
                subject = _subject_id(violation.subject, submitted or [])
                text = present.violation_text(violation.reason, violation.description)
                offenders.setdefault(subject, []).append(text)
        on_page = {c.conversation_id for c in page.items}
        context = {
            "target": target,
            "name": str(values.get("name", "") or ""),
            "filters": filters,
            "filter_errors": filter_errors,
            "include_members": include_members,
            "conversations": page.items,
            "next_page_token": page.next_page_token,
            "paged": bool(page_token),
            "selected": set(selected),
            "carried": [i for i in selected if i not in on_page],
            "pasted": str(values.get("ids", "") or ""),
            "active_files": page_files(active.items),
            "refusal": refusal,
            "offenders": offenders,
        }
        status = 200 if refusal is None else 409
        return console.render(request, "new.html", context, status)

    @signed_in
    async def new_page(request: Request, service: Service) -> Response:
        return await picker(request, service, request.query_params)

    @signed_in
    async def start_build(request: Request, service: Service) -> Response:
        form = await checked_form(request)
        if isinstance(form, Response):
            return form
        target = str(form.get("file", "") or "")
        pasted = str(form.get("ids", "") or "").replace(",", " ").split()[:MAX_PASTED_IDS]
        ids = _unique([*(str(v) for v in form.getlist("selected")), *pasted])
        name = str(form.get("name", "") or "").strip()
        operation = service.add(target, ids) if target else service.create(name, ids)
        try:
            first = await operation.__anext__()
        except TrainingFilesError as refusal:
            if isinstance(refusal, Unauthenticated | NotFound):
                raise
            return await picker(request, service, form, refusal=refusal, submitted=ids)
        except StopAsyncIteration:
            await operation.result()  # raises the stream's own error
            raise
        token = session_token(request) or ""
        file_id = first.training_file_id or target
        build = console.builds.start(
            owner_of(token), "add" if target else "create", operation, first, file_id
        )
        return RedirectResponse(f"/builds/{build.id}", status_code=303)

    async def build_page(request: Request) -> Response:
        token = session_token(request)
        if token is None:
            return RedirectResponse("/signin", status_code=303)
        build = console.builds.get(request.path_params["build_id"], owner_of(token))
        if build is None:
            return console.render(
                request,
                "error.html",
                {"title": "Not found", "message": "No such build.", "reason": ""},
                404,
            )
        last = build.events[-1] if build.events else {"percent": 0, "stage": "validating"}
        context = {"build": build, "percent": last.get("percent", 0), "stage": last["stage"]}
        return console.render(request, "build.html", context)

    async def build_events(request: Request) -> Response:
        token = session_token(request)
        build = console.builds.get(request.path_params["build_id"], owner_of(token or ""))
        if token is None or build is None:
            return Response("no such build", status_code=404, media_type="text/plain")
        return StreamingResponse(
            event_stream(build),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def not_found(request: Request, _: Exception) -> Response:
        return console.render(
            request,
            "error.html",
            {"title": "Not found", "message": "No such page.", "reason": ""},
            404,
        )

    async def server_error(request: Request, _: Exception) -> Response:
        # The traceback goes to the log (Starlette re-raises), never to the page.
        return console.render(
            request,
            "error.html",
            {"title": "Something went wrong", "message": "The console failed.", "reason": ""},
            500,
        )

    routes = [
        Route("/", home),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signin/link", signin_link, methods=["GET"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/files", files),
        Route("/files/{file_id}", training_file),
        Route("/files/{file_id}/download", download),
        Route("/files/{file_id}/archive", archive, methods=["POST"]),
        Route("/new", new_page, methods=["GET"]),
        Route("/new", start_build, methods=["POST"]),
        Route("/builds/{build_id}", build_page),
        Route("/builds/{build_id}/events", build_events),
        Mount("/static", StaticFiles(packages=[("trainingfiles_web", "static")]), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers={404: not_found, Exception: server_error},
    )


def page_files(files: list[resources_pb2.TrainingFile]) -> list[tuple[str, str]]:
    return [(f.id, f"{f.name} (v{f.version}, {f.conversation_count} conversations)") for f in files]


def _unique(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if value:
            seen.setdefault(value, None)
    return list(seen)


def _subject_id(subject: str, submitted: list[str]) -> str:
    """A violation's conversation: its id, or the id at `conversation_ids[i]`."""
    if subject.startswith("conversation_ids[") and subject.endswith("]"):
        index = subject[len("conversation_ids[") : -1]
        if index.isdigit() and int(index) < len(submitted):
            return submitted[int(index)]
    return subject
