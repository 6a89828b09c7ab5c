"""The scripted model server: a loopback HTTP server in a background thread.

:class:`FakeModelServer` routes each request (:mod:`.routing`), picks the reply
(:mod:`.selection`), renders it in the request's protocol (:mod:`.openai`, :mod:`.anthropic`,
:mod:`.gemini`) and writes it, streamed with chunked encoding when the client asked for a stream.
Every request is kept in :attr:`FakeModelServer.requests` and, optionally, a JSON-lines log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import json
import socket
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stretto.errors import UsageError
from stretto.testing.fakemodel.anthropic import Messages, anthropic_models
from stretto.testing.fakemodel.gemini import Gemini, gemini_model, gemini_models
from stretto.testing.fakemodel.inflight import InFlight
from stretto.testing.fakemodel.ollama import (
    VERSION,
    OllamaChat,
    known_model,
    ollama_show,
    ollama_tags,
)
from stretto.testing.fakemodel.openai import (
    ChatCompletions,
    Responses,
    openai_error,
    openai_model,
    openai_models,
)
from stretto.testing.fakemodel.protocols import (
    Api,
    Reply,
    Turn,
    error_message,
    estimate_tokens,
    json_reply,
    resolve_tokens,
    retry_headers,
)
from stretto.testing.fakemodel.routing import Route, route
from stretto.testing.fakemodel.script import HttpError, Script, Step
from stretto.testing.fakemodel.selection import Facts, choose

HOST = "127.0.0.1"
APIS: dict[str, Api] = {
    api.name: api for api in (ChatCompletions(), Responses(), Messages(), Gemini(), OllamaChat())
}
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "proxy-authorization"}
)
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the server received, and what it answered.

    ``status`` is ``None`` for a hang; ``step`` is the step number chosen (also past the end),
    ``rule`` the rule that answered instead (e.g. ``"rules[0]"``).
    """

    time: str
    method: str
    path: str
    session: str
    protocol: str | None
    endpoint: str
    headers: dict[str, str]
    body: Any
    status: int | None
    step: int | None = None
    rule: str | None = None
    past_end: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class FakeModelServer:
    """A scripted model server on 127.0.0.1 speaking OpenAI, Anthropic and Gemini protocols.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`)::

        with FakeModelServer(Script.from_steps([Step(text="hi")])) as server:
            client_env = server.env()  # OPENAI_BASE_URL=…/v1, ANTHROPIC_BASE_URL=…, …

    Args:
        script: a :class:`Script`, or a list of steps for the ``default`` session.
        host: must be ``127.0.0.1``; the server never listens on another address.
        port: 0 picks a free port.
        log_path: append every request to this file as one JSON line.

    Raises:
        UsageError: ``host`` is not 127.0.0.1, or the port cannot be bound.
    """

    def __init__(
        self,
        script: Script | Sequence[Step],
        *,
        host: str = HOST,
        port: int = 0,
        log_path: Path | str | None = None,
    ) -> None:
        if host != HOST:
            raise UsageError(
                f"the fake model server listens on {HOST} only (got host {host!r}); it is for "
                "local rehearsal and tests, so no other machine can reach it"
            )
        self.script = script if isinstance(script, Script) else Script.from_steps(script)
        self.log_path = Path(log_path) if log_path is not None else None
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[LoggedRequest] = []
        self._failures: dict[str, int] = {}
        self._serial = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log: IO[str] | None = None
        self._flight = InFlight()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeModelServer:
        """Bind and serve in a background thread; returns ``self``."""
        if self._httpd is not None:
            return self
        try:
            httpd = _HTTPServer((HOST, self._port), _Handler, owner=self)
        except OSError as error:
            raise UsageError(
                f"cannot listen on {HOST}:{self._port}: {error.strerror or error}; "
                "pick another port, or 0 for a free one"
            ) from None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", encoding="utf-8")
        self._httpd = httpd
        self._stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-model",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: release hung requests, close every connection, join the threads."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        httpd.join_handlers(timeout=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The port listened on (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("the fake model server is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``default`` session's base URL."""
        return f"http://{HOST}:{self.port}"

    def session_url(self, session: str = "default") -> str:
        """The base URL of ``session``: ``http://127.0.0.1:PORT/s/<session>``."""
        return self.url if session == "default" else f"{self.url}/s/{session}"

    def env(self, session: str = "default") -> dict[str, str]:
        """Endpoint variables that point each CLI at ``session``.

        OpenAI clients take the ``/v1`` base (aider, opencode, qwen-code; codex's ``base_url``);
        Claude Code and Gemini CLI take the bare base and add ``/v1/…`` or ``/v1beta/…``.
        """
        base = self.session_url(session)
        return {
            "OPENAI_BASE_URL": f"{base}/v1",
            "OPENAI_API_BASE": f"{base}/v1",
            "ANTHROPIC_BASE_URL": base,
            "GOOGLE_GEMINI_BASE_URL": base,
        }

    # ------------------------------------------------------------------ the request log

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def _record(self, record: LoggedRequest) -> None:
        with self._lock:
            self._requests.append(record)
            if self._log is not None:
                self._log.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
                self._log.flush()

    # ------------------------------------------------------------------ requests in flight

    def peak_in_flight(
        self,
        *,
        session: str | None = None,
        protocol: str | None = None,
        endpoint: str | None = "generate",
    ) -> int:
        """The most requests this server was answering at once, among those of ``session``,
        ``protocol`` and ``endpoint`` (None: any); see :mod:`.inflight`. E.g.
        ``peak_in_flight(protocol="ollama")``: model calls to the "local Ollama server"."""
        return self._flight.peak(session, protocol, endpoint)

    # ------------------------------------------------------------------ answering

    def _answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Decision:
        """Decide the answer to one request (``headers`` with lower-case names)."""
        where = route(method, target, headers)
        text = raw.decode("utf-8", "replace")
        body: Any = None
        if text:
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        answer = self._decide(where, body, text)
        answer = dataclasses.replace(answer, key=(where.session, where.protocol, where.endpoint))
        choice_step, choice_rule, past_end = answer.record_fields
        record = LoggedRequest(
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            method=method,
            path=_redact_query(target),
            session=where.session,
            protocol=where.protocol,
            endpoint=where.endpoint,
            headers={k: REDACTED if k in SECRET_HEADERS else v for k, v in headers.items()},
            body=body,
            status=answer.reply.status if answer.reply is not None else None,
            step=choice_step,
            rule=choice_rule,
            past_end=past_end,
        )
        self._record(record)
        return answer

    def _decide(self, where: Route, body: Any, text: str) -> _Decision:
        api = APIS.get(where.protocol or "")
        fail = api.error if api is not None else openai_error
        if where.endpoint == "head":
            return _Decision(Reply(200, (("Content-Type", "text/plain"),)))
        if where.endpoint == "unknown":
            return _Decision(fail(404, _UNKNOWN_ENDPOINT, None))
        session = self.script.sessions.get(where.session)
        if session is None:
            names = ", ".join(sorted(self.script.sessions)) or "none"
            message = (
                f"no session {where.session!r} in script {self.script.source} (sessions: {names}); "
                "use the URL prefix /s/<session>/, or name a session 'default' for unprefixed URLs"
            )
            return _Decision(fail(404, message, None))
        models = tuple(self.script.models)
        if where.endpoint == "models":
            listing = {
                "gemini": gemini_models,
                "anthropic": anthropic_models,
                "ollama": ollama_tags,
            }.get(where.protocol or "", openai_models)
            return _Decision(json_reply(200, listing(models)))
        if where.endpoint == "version":
            return _Decision(json_reply(200, {"version": VERSION}))
        if where.endpoint == "model" and where.protocol == "ollama":
            asked = body.get("model") or body.get("name") if isinstance(body, dict) else None
            if not isinstance(asked, str) or not known_model(asked, models):
                return _Decision(fail(404, f"model '{asked}' not found", None))
            return _Decision(json_reply(200, ollama_show(asked)))
        if where.endpoint == "model":
            model = where.model or models[0]
            one = gemini_model(model) if where.protocol == "gemini" else openai_model(model)
            return _Decision(json_reply(200, one))
        assert api is not None
        if not isinstance(body, dict):
            return _Decision(api.error(400, "the request body must be a JSON object", None))
        if where.endpoint == "count_tokens":
            count = estimate_tokens(text)
            value = {"totalTokens": count} if api.name == "gemini" else {"input_tokens": count}
            return _Decision(json_reply(200, value))
        model = str(body.get("model") or where.model or models[0])
        facts = Facts(api.name, model, api.has_tools(body), api.json_mode(body), text)
        choice = choose(self.script, where.session, session, facts, api.roles(body))
        step = choice.step
        fields = (choice.index, choice.rule, choice.past_end)
        if step.http_error is not None and self._fails(choice.key, step.http_error):
            return _Decision(_error_reply(api, step.http_error), step.delay, fields)
        if step.hang:
            return _Decision(None, step.delay, fields)
        turn = Turn(
            text=step.text,
            tool_calls=step.tool_calls,
            tokens=resolve_tokens(step.usage, text, step.text, step.tool_calls),
            model=model,
            serial=next(self._serial),
            stream=where.stream if api.name == "gemini" else api.stream(body),
            options={**api.options(body), "sse": where.sse},
        )
        return _Decision(api.render(turn), step.delay, fields)

    def _fails(self, key: str, error: HttpError) -> bool:
        """Whether this request gets the step's error (``times`` counts failures per step)."""
        if error.times is None:
            return True
        with self._lock:
            done = self._failures.get(key, 0)
            if done >= error.times:
                return False
            self._failures[key] = done + 1
            return True


_UNKNOWN_ENDPOINT = (
    "stretto's fake model server has no such endpoint; it serves POST …/chat/completions, "
    "…/responses, …/v1/messages, …/v1/messages/count_tokens, "
    "…/models/<m>:generateContent|:streamGenerateContent|:countTokens, Ollama's /api/chat, "
    "/api/show, /api/tags and /api/version, GET …/models and HEAD /"
)


@dataclass(frozen=True, slots=True)
class _Decision:
    """What the handler must do: wait ``delay``, then send ``reply`` (``None``: hang)."""

    reply: Reply | None
    delay: float = 0.0
    record_fields: tuple[int | None, str | None, bool] = (None, None, False)
    key: tuple[str, str | None, str] = ("default", None, "unknown")  # for peak_in_flight


def _error_reply(api: Api, error: HttpError) -> Reply:
    if error.body is None:
        return api.error(error.status, error_message(error.status), error.retry_after)
    if isinstance(error.body, str):
        try:
            json.loads(error.body)
            kind = "application/json"
        except ValueError:
            kind = "text/plain; charset=utf-8"
        headers = (("Content-Type", kind), *retry_headers(error.retry_after))
        return Reply(error.status, headers, error.body.encode())
    return json_reply(error.status, error.body, retry_headers(error.retry_after))


def _redact_query(target: str) -> str:
    url = urlsplit(target)
    if not url.query:
        return target
    pairs = [
        (k, REDACTED if k.lower() in ("key", "api_key") else v) for k, v in parse_qsl(url.query)
    ]
    return urlunsplit(url._replace(query=urlencode(pairs, safe="<>")))


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections and handler threads so :meth:`FakeModelServer.stop` is clean."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], *, owner: FakeModelServer
    ) -> None:
        self.owner = owner
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._conn_lock:
            self._connections.add(request)
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection, so handlers blocked on it return."""
        with self._conn_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        with self._conn_lock:
            handlers = list(self._handlers)
        for thread in handlers:
            thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log records everything

    def _serve(self) -> None:
        owner = self.server.owner
        stopping = owner._stopping
        try:
            raw = self._read_body()
        except _BadBody as error:
            self._send(openai_error(error.status, str(error), None))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = owner._answer(self.command, self.path, headers, raw)
        began = owner._flight.began(answer.key)
        try:
            self._reply(answer, stopping)
        finally:
            owner._flight.ended(answer.key, began)

    def _reply(self, answer: _Decision, stopping: threading.Event) -> None:
        if answer.delay and stopping.wait(answer.delay):
            self.close_connection = True
            return
        if answer.reply is None:  # hang: say nothing until the server stops
            stopping.wait()
            self.close_connection = True
            return
        if stopping.is_set():
            self.close_connection = True
            return
        try:
            self._send(answer.reply)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        try:
            if encoding == "gzip":
                return gzip.decompress(raw)
            if encoding == "deflate":
                return zlib.decompress(raw)
        except (OSError, zlib.error) as error:
            raise _BadBody(400, f"cannot decompress the {encoding} request body: {error}") from None
        if encoding not in ("identity", ""):
            raise _BadBody(
                415, f"request body encoding {encoding!r} is not supported; send it uncompressed"
            )
        return raw

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.chunks is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
            return
        chunked = self.request_version != "HTTP/1.0"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for chunk in reply.chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class _BadBody(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
