"""The reference engine's HTTP face: the OpenAI completions API as vLLM serves it, so a load
generator or profiler talks to both the same way.

- POST /v1/completions: `prompt` as token ids (or text, read byte by byte into ids), `max_tokens`,
  `stream`, `stream_options.include_usage` (usage in a last chunk) and `continuous_usage_stats`
  (running usage in every chunk), `ignore_eos` (accepted: random weights never end a sequence
  early, so every request produces exactly `max_tokens`). Greedy decoding; sampling fields are
  accepted and ignored.
- GET /health (engine counters as JSON; 503 once the engine has failed), GET /v1/models.

Streaming uses chunked transfer encoding and server-sent events ("data: {...}" then
"data: [DONE]"), as vLLM does. A bad request gets a 4xx and a JSON error with the reason; nothing
a client sends stops the server. A client that goes away has its request aborted.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from capsim.real.engine import EngineError, ReferenceEngine, Stream

MAX_BODY_BYTES = 16 << 20
CLIENT_CHECK_S = 0.25  # how often a handler waiting for a token checks that its client is still there


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
        raise BadRequest(f"model {data['model']!r} is not served here; this server serves {model_name!r}", HTTPStatus.NOT_FOUND)
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
    return {"prompt": prompt, "max_tokens": max_tokens, "stream": bool(data.get("stream", False)),
            "include_usage": bool(options.get("include_usage")), "continuous_usage": bool(options.get("continuous_usage_stats"))}


class CompletionHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ReferenceServer"

    def log_message(self, format, *args):  # one line a request would drown the console under load
        pass

    # ---- routes ----------------------------------------------------------------------------------

    def do_GET(self):
        engine = self.server.engine
        if self.path == "/health":
            if not engine.alive:
                return self._json({"status": "failed", "error": engine.failure or "the engine core exited"}, HTTPStatus.SERVICE_UNAVAILABLE)
            return self._json({"status": "ok", **engine.stats()})
        if self.path == "/v1/models":
            return self._json({"object": "list", "data": [{"id": self.server.model_name, "object": "model",
                                                           "owned_by": "capsim", "max_model_len": engine.config.max_model_len}]})
        self._error(f"no route {self.path}; try POST /v1/completions, GET /health or GET /v1/models", HTTPStatus.NOT_FOUND)

    def do_POST(self):
        if self.path != "/v1/completions":
            return self._error(f"no route {self.path}; completions are at POST /v1/completions", HTTPStatus.NOT_FOUND)
        try:
            self._check_key()
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                raise BadRequest(f"the body is {length} bytes; at most {MAX_BODY_BYTES}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            fields = parse_completion(self.rfile.read(length), self.server.model_name, self.server.vocab)
            stream = self.server.engine.submit(fields["prompt"], fields["max_tokens"])
        except BadRequest as error:
            return self._error(str(error), error.status)
        except EngineError as error:
            return self._error(str(error), HTTPStatus.BAD_REQUEST)
        except ValueError:
            return self._error("Content-Length must be an integer", HTTPStatus.BAD_REQUEST)
        if fields["stream"]:
            self._stream(stream, fields)
        else:
            self._complete(stream, fields)

    # ---- responses ---------------------------------------------------------------------------------

    def _check_key(self):
        key = self.server.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            raise BadRequest("missing or wrong API key: send Authorization: Bearer <key>", HTTPStatus.UNAUTHORIZED)

    def _next_token(self, stream: Stream):
        """The next (token, time), or None at the end; aborts the request if the client left."""
        while True:
            try:
                return stream.tokens.get(timeout=CLIENT_CHECK_S)
            except queue.Empty:
                if self._client_gone():
                    self.server.engine.abort(stream)
                    raise ConnectionAbortedError("client went away") from None

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, stream: Stream, fields: dict):
        request_id, created, name = f"cmpl-{stream.request_id}", int(time.time()), self.server.model_name
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        generated = 0
        try:
            while (item := self._next_token(stream)) is not None:
                generated += 1
                done = generated == fields["max_tokens"]
                chunk = {"id": request_id, "object": "text_completion", "created": created, "model": name,
                         "choices": [{"index": 0, "text": token_text(item[0]), "logprobs": None,
                                      "finish_reason": "length" if done else None, "stop_reason": None}]}
                if fields["continuous_usage"]:
                    chunk["usage"] = usage(stream.prompt_len, generated)
                self._send_event(chunk)
            if stream.error:
                self._send_event({"error": {"message": stream.error, "type": "server_error", "code": 500}})
            elif fields["include_usage"]:
                self._send_event({"id": request_id, "object": "text_completion", "created": created, "model": name,
                                  "choices": [], "usage": usage(stream.prompt_len, generated)})
            self._send_chunk(b"data: [DONE]\n\n")
            self._send_chunk(b"")
        except (BrokenPipeError, ConnectionError):
            self.server.engine.abort(stream)
            self.close_connection = True

    def _complete(self, stream: Stream, fields: dict):
        tokens = []
        try:
            while (item := self._next_token(stream)) is not None:
                tokens.append(item[0])
        except ConnectionError:
            self.close_connection = True
            return
        if stream.error:
            return self._error(stream.error, HTTPStatus.SERVICE_UNAVAILABLE)
        self._json({"id": f"cmpl-{stream.request_id}", "object": "text_completion", "created": int(time.time()),
                    "model": self.server.model_name, "usage": usage(stream.prompt_len, len(tokens)),
                    "choices": [{"index": 0, "text": "".join(map(token_text, tokens)), "logprobs": None,
                                 "finish_reason": "length", "stop_reason": None}]})

    def _send_event(self, data: dict):
        self._send_chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

    def _send_chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _json(self, data: dict, status: HTTPStatus = HTTPStatus.OK):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, message: str, status: HTTPStatus):
        self._json({"object": "error", "message": message, "type": status.phrase, "code": int(status)}, status)


def token_text(token: int) -> str:
    """No tokenizer here: a token's text names its id."""
    return f"<{token}>"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ReferenceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the listen backlog: at 5, a burst of arrivals loses SYNs and waits a second to retry

    def __init__(self, engine: ReferenceEngine, model_name: str, vocab: int, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None):
        self.engine, self.model_name, self.vocab, self.api_key = engine, model_name, vocab, api_key
        super().__init__((host, port), CompletionHandler)

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up between requests: nothing to report
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_until(self, stop: threading.Event) -> None:
        """Serve until `stop` is set, then stop the engine (every open stream ends) and close."""
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        try:
            while not stop.wait(0.5) and self.engine.alive:
                pass
        finally:
            self.engine.stop()
            self.shutdown()
            self.server_close()
