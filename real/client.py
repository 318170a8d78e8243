"""One streaming completion against an OpenAI-compatible endpoint (vLLM or capsim's reference
engine), with the time of every token.

Token counts come from the stream itself: with `continuous_usage_stats` (vLLM, capsim) every
chunk carries the running completion-token count, so a chunk that carries several tokens is
known as such; without it, a chunk with a choice counts as one token. The k tokens of one chunk
are spread evenly over the time since the previous chunk (never zero gaps, never a lost token);
only the extra tokens of a request's first chunk share its time, having no earlier token.

Time is taken per network read, not per line: a busy server's events pile up and arrive in one
read, and stamping each line as it is parsed would give their tokens gaps of microseconds. All
the tokens of one read are spread, like those of one chunk, over the time since the token
before that read. A request whose events all came in one read (the client fell that far behind)
has no gap to spread over: it is counted (`one_read_requests`), as a sign of a starved client.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

MIN_STREAMED = 4  # a completion this long whose tokens all came in one chunk was not streamed
PROBE_DEADLINE_S = 30.0  # the longest a probe before a run may take in all, however the bytes trickle
MAX_MODELS_BYTES = 1 << 20  # a /v1/models answer is a few KB


class EndpointError(RuntimeError):
    """The endpoint cannot be used (down, wrong URL, refused key); the message says what to fix."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # http://host:port, optionally with a path prefix before /v1
    model: str  # the served model name
    api_key: str | None = field(default=None, repr=False)  # never printed, never written
    timeout_s: float = 60.0  # the longest wait for any byte of a response
    max_model_len: int | None = None  # prompt + output tokens the engine serves at most, where /v1/models says

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.url)

    def connection(self, timeout_s: float | None = None) -> http.client.HTTPConnection:
        parts = self.parts
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=timeout_s or self.timeout_s)

    def headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def path(self, route: str) -> str:
        return self.parts.path.rstrip("/") + route

    def absolute(self, route: str) -> str:
        """The full URL of a route, after any path prefix of the endpoint (http://host/prefix/v1/...)."""
        parts = self.parts
        return f"{parts.scheme}://{parts.netloc}{self.path(route)}"


def base_url(url: str) -> str:
    """The server's root: an OpenAI base URL (http://host:8000/v1) works as well as http://host:8000."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def connect(
    url: str, api_key: str | None = None, model: str | None = None, timeout_s: float = 60.0, serves=None
) -> Endpoint:
    """Check that the endpoint answers /v1/models (fails fast if not) and name the model to use:
    `model` by its served name, or the served model for which `serves(name)` is true."""
    url = base_url(url)
    parts = urllib.parse.urlsplit(url)
    try:
        _ = parts.port  # reading it checks it
    except ValueError:
        raise EndpointError(f"endpoint {url!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"endpoint {url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    probe = Endpoint(url, model or "", api_key, timeout_s)
    connection = probe.connection(timeout_s=min(timeout_s, 10.0))

    def ask():
        connection.request("GET", probe.path("/v1/models"), headers=probe.headers())
        response = connection.getresponse()
        return response, response.read(MAX_MODELS_BYTES)

    try:
        response, body = within(
            PROBE_DEADLINE_S,
            ask,
            connection.close,
            f"{url}/v1/models did not answer in full within {PROBE_DEADLINE_S:g} s",
        )
    except (OSError, http.client.HTTPException, OverflowError, ValueError) as error:
        raise EndpointError(
            f"no engine answers at {url} ({error}); start one (capsim serve, vllm serve) or fix the URL"
        ) from None
    finally:
        connection.close()
    if response.status in (401, 403):
        raise EndpointError(f"{url} refused the API key (HTTP {response.status}); pass --api-key or set OPENAI_API_KEY")
    if response.status != 200:
        raise EndpointError(f"{url}/v1/models answered HTTP {response.status}; is this an OpenAI-compatible server?")
    try:
        cards = json.loads(body)["data"]
        served = [str(m["id"]) for m in cards]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise EndpointError(f"{url}/v1/models did not list models as the OpenAI API does") from None
    if serves is not None and not model:
        model = next((name for name in served if serves(name)), None)
        if model is None:
            raise EndpointError(
                f"{url} serves {', '.join(served) or 'nothing'}, not the model being confirmed: "
                "point --endpoint at the engine that serves it, or give the --model it serves"
            )
    if model and model not in served:
        raise EndpointError(f"{url} does not serve {model!r}; it serves {', '.join(served) or 'nothing'}")
    if not model and not served:
        raise EndpointError(f"{url} serves no model yet")
    model = model or served[0]
    card = next(m for m in cards if str(m["id"]) == model)
    limit = card.get("max_model_len") if isinstance(card, dict) else None  # vLLM's and capsim serve's field
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and 1 < limit < 2**31 else None
    return Endpoint(probe.url, model, api_key, timeout_s, limit)


def check_completions(endpoint: Endpoint, prompt: list[int]) -> None:
    """One tiny real request before any trial: the key, the model and the prompt's token ids are
    then known to be accepted (a server may leave /v1/models open), or the server's own words say why not."""
    connection = endpoint.connection()
    deadline = 2 * endpoint.timeout_s + PROBE_DEADLINE_S
    completion = within(
        deadline,
        lambda: stream_completion(endpoint, prompt, 2, Completion(), connection),
        connection.close,
        f"{endpoint.url} did not finish a first 2-token request within {deadline:g} s",
    )
    if completion.status != "finished":
        hint = (
            "; pass --api-key or set OPENAI_API_KEY" if completion.reason.startswith(("HTTP 401", "HTTP 403")) else ""
        )
        raise EndpointError(f"{endpoint.url} refused a first 2-token request: {completion.reason}{hint}")


@dataclass
class Completion:
    """What happened to one request: token times (perf_counter seconds), and how it ended."""

    token_times: list[float] = field(default_factory=list)
    sent_s: float = float("nan")
    status: str = "unfinished"  # finished | failed | unfinished (cut off by the load generator)
    reason: str = ""
    multi_token_chunks: int = 0
    chunks: int = 0  # events that carried tokens


def request_body(endpoint: Endpoint, prompt: list[int], max_tokens: int) -> bytes:
    """A streaming completion of exactly max_tokens tokens, with running token counts."""
    return json.dumps(
        {
            "model": endpoint.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "min_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    ).encode()


class StreamFailed(Exception):
    """The stream cannot be read as a completion; the message says why."""


class StreamReader:
    """Reads the server-sent events of one streaming completion into a Completion, a line at a
    time (the blocking and the asyncio clients share it): token times, counts and failures."""

    def __init__(self, completion: Completion, max_tokens: int, on_gap=None):
        self.completion, self.max_tokens, self.on_gap = completion, max_tokens, on_gap
        self.usage_seen = 0
        self.read_at: float | None = None  # the time of the read that brought the latest tokens ...
        self.read_first = 0  # ... and the index of its first token
        self.pending = b""  # the start of a line whose end has not arrived

    def data(self, data: bytes, now: float) -> bool:
        """Take the bytes of one network read, received at `now`; True at the end of the stream."""
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        return any(self.line(line, now) for line in lines)

    def end_of_data(self, now: float) -> bool:
        """The connection closed: a last line without its newline still counts."""
        line, self.pending = self.pending, b""
        return bool(line) and self.line(line, now)

    def line(self, line: bytes, now: float) -> bool:
        """Take one line received at `now`; True at the end of the stream. Raises StreamFailed."""
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise StreamFailed(f"malformed chunk (not a JSON object): {data[:100].decode(errors='replace')}")
        if "error" in chunk:
            raise StreamFailed(f"engine error: {error_message(data)}")
        usage = chunk.get("usage") or {}
        reported = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if reported is not None and (isinstance(reported, bool) or not isinstance(reported, int) or reported < 0):
            raise StreamFailed(f"malformed chunk: completion_tokens is {reported!r}")
        if not chunk.get("choices"):
            self.usage_seen = reported if reported is not None else self.usage_seen
            return False
        if reported is not None and reported > self.max_tokens:  # refused before it can cost memory
            raise StreamFailed(
                f"the engine reports {reported} completion tokens, more than the {self.max_tokens} asked"
            )
        times = self.completion.token_times
        if len(times) >= self.max_tokens and any(isinstance(c, dict) and c.get("text") for c in chunk["choices"]):
            raise StreamFailed(f"the engine sent more than the {self.max_tokens} tokens asked")
        count = min(reported - len(times) if reported is not None else 1, self.max_tokens - len(times))
        if count > 1:
            self.completion.multi_token_chunks += 1
        if count <= 0:
            return False
        self.completion.chunks += 1
        if now != self.read_at:  # the first tokens of a new read
            self.read_at, self.read_first = now, len(times)
        first = self.read_first
        previous = times[first - 1] if first else None
        spread = len(times) + count - first  # every token of this read shares the time since the one before it
        times[first:] = [
            now if previous is None else previous + (now - previous) * i / spread for i in range(1, spread + 1)
        ]
        if (
            self.on_gap is not None and previous is not None
        ):  # the new tokens' gaps (earlier ones of the read were told theirs)
            for _ in range(count):
                self.on_gap((now - previous) / spread)
        return False

    def finish(self) -> Completion:
        """The stream ended: finished if every token came."""
        completion, times = self.completion, self.completion.token_times
        if len(times) < self.max_tokens:
            raise StreamFailed(f"the stream ended after {len(times)} of {self.max_tokens} tokens")
        if self.max_tokens >= MIN_STREAMED and completion.chunks == 1:  # no gap measured: a TBT of 0 would pass any SLO
            raise StreamFailed(
                f"all {self.max_tokens} tokens came in one chunk: the engine does not stream, so their gaps "
                "cannot be measured"
            )
        if self.usage_seen and self.usage_seen != len(times):
            completion.reason = f"usage says {self.usage_seen} tokens, the stream carried {len(times)}"
        completion.status = "finished"
        return completion


def stream_completion(
    endpoint: Endpoint,
    prompt: list[int],
    max_tokens: int,
    completion: Completion,
    connection: http.client.HTTPConnection | None = None,
) -> Completion:
    """Run one request, blocking (the probe before a run; the load generator uses aiohttp)."""
    connection = connection or endpoint.connection()
    reader = StreamReader(completion, max_tokens)
    try:
        completion.sent_s = time.perf_counter()
        connection.request(
            "POST",
            endpoint.path("/v1/completions"),
            body=request_body(endpoint, prompt, max_tokens),
            headers=endpoint.headers(),
        )
        response = connection.getresponse()
        if response.status != 200:
            return _fail(completion, f"HTTP {response.status}: {error_message(response.read())}")
        read_at = _stamp_reads(response)
        for line in response:
            if reader.line(line, read_at[0]):  # the time of the network read that brought the line
                break
        return reader.finish()
    except StreamFailed as failure:
        return _fail(completion, str(failure))
    except socket.timeout:
        return _fail(completion, f"no data for {endpoint.timeout_s:g} s")
    except (OSError, http.client.HTTPException, ValueError, OverflowError, RecursionError) as error:
        return _fail(completion, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    finally:
        connection.close()


def _stamp_reads(response: http.client.HTTPResponse) -> list[float]:
    """[time of the latest network read of the response]: its buffer reads the socket only when
    empty, so a line's bytes came with that read, however long after it the line is parsed."""
    raw = response.fp.raw
    read_at = [time.perf_counter()]
    readinto = raw.readinto

    def stamped(buffer):
        count = readinto(buffer)
        read_at[0] = time.perf_counter()
        return count

    raw.readinto = stamped
    return read_at


def within(seconds: float, call, stop, message: str):
    """call()'s result, or EndpointError(message) once `seconds` have passed: a server that drips
    bytes passes every per-read timeout, so a probe also has an overall deadline. On time-out,
    `stop()` (closing the connection) ends the call's blocking read."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        stop()
        raise EndpointError(message)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _fail(completion: Completion, reason: str) -> Completion:
    if not completion.reason:  # a cut-off by the load generator says why first
        completion.status, completion.reason = "failed", reason
    return completion


def error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    error = data.get("error", data) if isinstance(data, dict) else data
    return str(error.get("message", error) if isinstance(error, dict) else error)[:500]
