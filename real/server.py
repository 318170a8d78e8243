"""The reference engine's HTTP face: the OpenAI completions API as vLLM serves it, so a load
generator or profiler talks to both the same way.

- POST /v1/completions: `prompt` as token ids (or text, read byte by byte into ids), `max_tokens`,
  `stream`, `stream_options.include_usage` (usage in a last chunk) and `continuous_usage_stats`
  (running usage in every chunk), `ignore_eos` (accepted: random weights never end a sequence
  early, so every request produces exactly `max_tokens`). Greedy decoding; sampling fields are
  accepted and ignored.
- GET /health (engine counters as JSON; 503 once the engine has failed), GET /v1/models.

Streaming uses chunked transfer encoding and server-sent events ("data: {...}" then
"data: [DONE]"), as vLLM does. Served by aiohttp on one asyncio loop: an open connection costs
no thread; headers must arrive within HEADER_TIMEOUT_S and a body within BODY_TIMEOUT_S. Every
error, a 404 included, is a JSON body with the reason; nothing a client sends stops the server.
Every /v1 route wants the API key when one is set (compared in constant time). A client that
goes away has its request aborted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
import time
from http import HTTPStatus

from aiohttp import web

from capsim.real.engine import EngineError, ReferenceEngine, Stream

MAX_BODY_BYTES = 16 << 20
HEADER_TIMEOUT_S = 15.0  # a connection that has not sent a whole request by then is closed
BODY_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 5.0


class BadRequest(ValueError):
    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def parse_completion(body: bytes, model_name: str, vocab: int) -> dict:
    """The request's fields, checked; BadRequest says what is wrong."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object with at least a prompt")
    if data.get("model") not in (None, model_name):
        raise BadRequest(
            f"model {data['model']!r} is not served here; this server serves {model_name!r}", HTTPStatus.NOT_FOUND
        )
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (list, str)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        prompt = [byte % vocab for byte in prompt.encode()]
    if not isinstance(prompt, list) or not prompt or not all(type(t) is int for t in prompt):
        raise BadRequest("prompt must be a non-empty list of token ids (integers) or a string; one prompt per request")
    if min(prompt) < 0 or max(prompt) >= vocab:
        raise BadRequest(f"token ids must lie in 0..{vocab - 1}, got {min(prompt)}..{max(prompt)}")
    max_tokens = data.get("max_tokens", 16)
    if type(max_tokens) is not int or max_tokens < 1:
        raise BadRequest(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if data.get("n", 1) != 1 or data.get("best_of", 1) != 1:
        raise BadRequest("n and best_of must be 1: one completion per request")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object")
    flags = {
        "stream": data.get("stream", False),
        "include_usage": options.get("include_usage", False),
        "continuous_usage": options.get("continuous_usage_stats", False),
    }
    for name, value in flags.items():
        if not isinstance(value, bool) and value is not None:
            raise BadRequest(f"{name} must be true or false, got {value!r}")
    return {"prompt": prompt, "max_tokens": max_tokens, **{k: bool(v) for k, v in flags.items()}}


class AsyncTokens:
    """A stream's token queue on the server's loop: the engine's reader thread puts, a handler awaits."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def get(self):
        return await self.queue.get()


class ReferenceServer:
    """The routes over an engine; bind() takes the port before the model loads, serve_until() serves."""

    def __init__(
        self,
        engine: ReferenceEngine | None,
        model_name: str,
        vocab: int,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        sock: socket.socket | None = None,
    ):
        self.engine, self.model_name, self.vocab, self.api_key = engine, model_name, vocab, api_key
        self.sock = sock or bind(host, port)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self.json_errors, self.authenticate])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        return app

    # ---- middlewares ----------------------------------------------------------------------------

    @web.middleware
    async def json_errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as error:  # aiohttp's own (404, 405, 413): a JSON body, as the API's errors
            if error.status < 400:
                raise
            message = {
                404: f"no route {request.path}; try POST /v1/completions, GET /health or GET /v1/models",
                405: f"{request.method} is not allowed on {request.path}",
                413: f"the body is over {MAX_BODY_BYTES} bytes",
            }.get(error.status, error.reason)
            return error_response(message, HTTPStatus(error.status))

    @web.middleware
    async def authenticate(self, request: web.Request, handler):
        if self.api_key and request.path.startswith("/v1"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            given = token.strip().encode("utf-8", "replace")  # a key of other characters is a wrong key, never a crash
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.api_key.encode("utf-8", "replace")):
                return error_response(
                    "missing or wrong API key: send Authorization: Bearer <key>", HTTPStatus.UNAUTHORIZED
                )
        return await handler(request)

    # ---- routes ---------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        engine = self.engine
        if not engine.alive:
            return web.json_response(
                {"status": "failed", "error": engine.failure or "the engine core exited"},
                status=HTTPStatus.SERVICE_UNAVAILABLE,
            )
        return web.json_response({"status": "ok", **engine.stats()})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_name,
                        "object": "model",
                        "owned_by": "capsim",
                        "max_model_len": self.engine.config.max_model_len,
                    }
                ],
            }
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return error_response(
                f"the body is {request.content_length} bytes; at most {MAX_BODY_BYTES}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        try:
            body = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return error_response(f"the body did not arrive within {BODY_TIMEOUT_S:g} s", HTTPStatus.REQUEST_TIMEOUT)
        except (OSError, ValueError) as error:  # the client hung up mid-body (ConnectionError): one line, no traceback
            request.app.logger.info("a client left before its request body arrived (%s)", type(error).__name__)
            return error_response("the request body was cut off", HTTPStatus.BAD_REQUEST)
        try:
            fields = parse_completion(body, self.model_name, self.vocab)
            stream = self.engine.submit(
                fields["prompt"], fields["max_tokens"], tokens=AsyncTokens(asyncio.get_running_loop())
            )
        except BadRequest as error:
            return error_response(str(error), error.status)
        except EngineError as error:
            return error_response(str(error), HTTPStatus.BAD_REQUEST)
        try:
            if fields["stream"]:
                return await self.stream(request, stream, fields)
            return await self.complete(stream)
        except BaseException:  # the client went away, or the answer failed: free the engine of the request
            self.engine.abort(stream)
            raise

    async def stream(self, request: web.Request, stream: Stream, fields: dict) -> web.StreamResponse:
        request_id, created, name = f"cmpl-{stream.request_id}", int(time.time()), self.model_name
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        if request.version >= (1, 1):  # HTTP/1.0 has no chunks: its stream ends when the connection closes
            response.enable_chunked_encoding()
        else:
            response.force_close()
        await response.prepare(request)
        generated = 0
        while (item := await stream.tokens.get()) is not None:
            generated += 1
            done = generated == fields["max_tokens"]
            chunk = {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": name,
                "choices": [
                    {
                        "index": 0,
                        "text": token_text(item[0]),
                        "logprobs": None,
                        "finish_reason": "length" if done else None,
                        "stop_reason": None,
                    }
                ],
            }
            if fields["continuous_usage"]:
                chunk["usage"] = usage(stream.prompt_len, generated)
            await response.write(event(chunk))
        if stream.error:
            await response.write(event({"error": {"message": stream.error, "type": "server_error", "code": 500}}))
        elif fields["include_usage"]:
            await response.write(
                event(
                    {
                        "id": request_id,
                        "object": "text_completion",
                        "created": created,
                        "model": name,
                        "choices": [],
                        "usage": usage(stream.prompt_len, generated),
                    }
                )
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def complete(self, stream: Stream) -> web.Response:
        tokens = []
        while (item := await stream.tokens.get()) is not None:
            tokens.append(item[0])
        if stream.error:
            return error_response(stream.error, HTTPStatus.SERVICE_UNAVAILABLE)
        return web.json_response(
            {
                "id": f"cmpl-{stream.request_id}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.model_name,
                "usage": usage(stream.prompt_len, len(tokens)),
                "choices": [
                    {
                        "index": 0,
                        "text": "".join(map(token_text, tokens)),
                        "logprobs": None,
                        "finish_reason": "length",
                        "stop_reason": None,
                    }
                ],
            }
        )

    # ---- serving --------------------------------------------------------------------------------

    def serve_until(self, stop: threading.Event) -> None:
        """Serve until `stop` is set or the engine fails, then stop the engine (every open stream
        ends with the reason) and close."""
        asyncio.run(self._serve(stop))

    async def _serve(self, stop: threading.Event) -> None:
        runner = web.AppRunner(
            self.app(),
            handle_signals=False,
            access_log=None,
            keepalive_timeout=HEADER_TIMEOUT_S,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_GRACE_S,
        )
        await runner.setup()
        await web.SockSite(runner, self.sock, backlog=1024).start()
        try:
            while not stop.is_set() and self.engine.alive:
                await asyncio.sleep(0.1)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)
            await asyncio.sleep(0.1)  # the streams' last chunks go out before the connections close
            await runner.cleanup()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, taken before anything slow (loading a model) so a busy port fails at once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise EngineError(f"cannot serve on host {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(1024)  # at 5, a burst of arrivals loses SYNs and waits a second to retry
    except OSError as error:
        sock.close()
        raise EngineError(
            f"cannot listen on {host}:{port}: {error.strerror}; choose another --port (0 picks a free one)"
        ) from None
    sock.setblocking(False)
    return sock


def event(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def error_response(message: str, status: HTTPStatus) -> web.Response:
    return web.json_response(
        {"object": "error", "message": message, "type": status.phrase, "code": int(status)}, status=int(status)
    )


def token_text(token: int) -> str:
    """No tokenizer here: a token's text names its id."""
    return f"<{token}>"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
