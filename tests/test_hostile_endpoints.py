"""The client against endpoints that lie or break, and the reference server against clients that
do: every failure is a request's error with its reason, never a dead thread or a traceback."""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from capsim.real.client import Completion, EndpointError, check_completions, connect, stream_completion
from capsim.real.loadgen import LoadOptions, dominant_failure, run_load
from capsim.traces import WorkloadSpec

CAPSIM = str(Path(sys.executable).parent / "capsim")


class Hostile(BaseHTTPRequestHandler):
    """Lists a model without asking for a key, then answers completions as `behaviour` says."""

    protocol_version = "HTTP/1.0"
    behaviour = "ok"

    def log_message(self, *args):
        pass

    def do_GET(self):
        kind = type(self).behaviour
        if kind == "drips models":  # a byte every 0.2 s: every read is in time, the answer never is
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
            return
        if kind == "huge chunk size":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"ffffffffffffffffffffffff\r\n{}")
            return
        self._reply(200, b'{"data": [{"id": "meta-llama/Meta-Llama-3-8B"}]}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        kind = type(self).behaviour
        if kind == "needs key" and self.headers.get("Authorization") != "Bearer right":
            return self._reply(401, b'{"message": "wrong key"}')
        if kind == "bad ids":
            return self._reply(400, b'{"object": "error", "message": "token ids must lie in 0..1023"}')
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if kind == "drips tokens":
            for _ in range(100):
                self.wfile.write(b":\n")
                self.wfile.flush()
                time.sleep(0.2)
            return
        chunks = {
            "huge usage": [{"choices": [{"text": "a"}], "usage": {"completion_tokens": 10**9}}],
            "not an object": [5],
            "string usage": [{"choices": [{"text": "a"}], "usage": {"completion_tokens": "many"}}],
            "one chunk": [
                {"choices": [{"text": "a" * body["max_tokens"]}], "usage": {"completion_tokens": body["max_tokens"]}}
            ],
            "twice the tokens": [{"choices": [{"text": "a"}]}] * (2 * body["max_tokens"]),
        }.get(
            kind,
            [{"choices": [{"text": "a"}], "usage": {"completion_tokens": i + 1}} for i in range(body["max_tokens"])],
        )
        for chunk in chunks:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")

    def _reply(self, status, data):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def hostile():
    def start(behaviour):
        handler = type("Handler", (Hostile,), {"behaviour": behaviour})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    servers = []
    yield start
    for httpd in servers:
        httpd.shutdown()


@pytest.mark.parametrize(
    "behaviour, reason",
    [
        ("huge usage", "more than the 5 asked"),
        ("not an object", "malformed chunk"),
        ("string usage", "completion_tokens is 'many'"),
        ("one chunk", "all 5 tokens came in one chunk"),
        ("twice the tokens", "more than the 5 tokens asked"),
        ("bad ids", "token ids must lie in 0..1023"),
    ],
)
def test_a_lying_or_broken_stream_fails_the_request_with_its_reason(hostile, behaviour, reason):
    endpoint = connect(hostile(behaviour))
    done = stream_completion(endpoint, [11, 12], 5, Completion())
    assert done.status == "failed" and reason in done.reason and len(done.token_times) <= 5


def test_an_openai_base_url_works_and_the_model_is_matched(hostile):
    url = hostile("ok")
    endpoint = connect(url + "/v1/", serves=lambda name: name.endswith("Llama-3-8B"))
    assert endpoint.url == url and endpoint.model == "meta-llama/Meta-Llama-3-8B"
    with pytest.raises(EndpointError, match="not the model being confirmed"):
        connect(url, serves=lambda name: False)


def test_a_wrong_key_is_found_before_any_trial_though_models_is_open(hostile):
    url = hostile("needs key")
    endpoint = connect(url, api_key="wrong")  # /v1/models let it through
    with pytest.raises(EndpointError, match="HTTP 401.*--api-key"):
        check_completions(endpoint, [11, 12])
    check_completions(connect(url, api_key="right"), [11, 12])


def test_a_trial_where_every_request_fails_stops_early_and_says_why(hostile):
    endpoint = connect(hostile("bad ids"))
    workload = WorkloadSpec("chat", num_requests=200, seed=1, max_total_tokens=64).at_qps(50)
    result = run_load(endpoint, workload, LoadOptions(vocab=32000, time_limit_s=60))
    reason, count, failed = dominant_failure(result)
    assert "token ids must lie in 0..1023" in reason and count == failed >= 16
    status, reasons = result.column("status"), result.column("reason")
    assert set(reasons[status == "unfinished"]) <= {"not sent"}  # only requests never sent say so
    assert "stopped early" in result.info["stopped_early"]
    assert (reasons == "not sent").sum() > 100  # stopped after the first failures, long before the last arrival


# ---- the reference server ------------------------------------------------------------------------

torch = pytest.importorskip("torch")
from capsim.real.process import free_port  # noqa: E402
from capsim.real.reference import reference_server  # noqa: E402
from capsim.sim import SystemSpec  # noqa: E402

KEY = "k-123"
SYSTEM = SystemSpec(
    model="tiny",
    hardware="cpu",
    scheduler="sarathi",
    token_budget=64,
    max_batch_size=4,
    num_kv_blocks=64,
    max_model_len=512,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with reference_server(
        SYSTEM, free_port(), str(tmp_path_factory.mktemp("s") / "engine.log"), dtype="float32", api_key=KEY
    ) as launcher:
        yield launcher.url


def request(url, method, path, body=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type", ""), data


def test_the_server_answers_every_error_in_json_and_checks_the_key_everywhere(server):
    status, kind, data = request(server, "GET", "/nowhere")
    assert status == 404 and kind.startswith("application/json") and "no route" in json.loads(data)["message"]
    assert request(server, "GET", "/v1/models")[0] == 401  # the model list wants the key too
    assert (
        request(server, "GET", "/v1/models", headers={"Authorization": f"bearer {KEY}"})[0] == 200
    )  # any case of Bearer
    status, _, data = request(
        server,
        "POST",
        "/v1/completions",
        {"prompt": [11], "max_tokens": 2, "stream": "no"},
        {"Authorization": f"Bearer {KEY}"},
    )
    assert status == 400 and "stream must be true or false" in json.loads(data)["message"]
    assert request(server, "PUT", "/v1/completions", headers={"Authorization": f"Bearer {KEY}"})[0] == 405


def test_half_sent_requests_cost_no_thread_and_block_nobody(server):
    host, port = server.removeprefix("http://").split(":")
    stalled = []
    for _ in range(200):
        s = socket.create_connection((host, int(port)))
        s.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"prompt"')
        stalled.append(s)
    try:
        status, _, data = request(
            server, "POST", "/v1/completions", {"prompt": [11, 12], "max_tokens": 3}, {"Authorization": f"Bearer {KEY}"}
        )
        assert status == 200 and json.loads(data)["usage"]["completion_tokens"] == 3
    finally:
        for s in stalled:
            s.close()


def test_serve_on_a_busy_port_fails_at_once(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [CAPSIM, "serve", "--model", "tiny", "--dtype", "float32", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and "choose another --port" in done.stderr and "Traceback" not in done.stderr
    # how soon it fails (before the model loads): bench/bench_interrupt.py


def test_a_path_prefix_appears_once_in_request_urls():
    from capsim.real.client import Endpoint

    assert (
        Endpoint("http://gpu-box:8000/api", "m").absolute("/v1/completions") == "http://gpu-box:8000/api/v1/completions"
    )
    assert Endpoint("https://gpu-box", "m").absolute("/v1/models") == "https://gpu-box/v1/models"


def test_a_probe_that_trickles_in_ends_at_its_deadline(hostile, monkeypatch):
    import capsim.real.client as client

    monkeypatch.setattr(client, "PROBE_DEADLINE_S", 1.0)
    with pytest.raises(EndpointError, match="did not answer in full within 1 s"):
        connect(hostile("drips models"))
    endpoint = client.Endpoint(hostile("drips tokens"), "m", None, timeout_s=1.0)
    with pytest.raises(EndpointError, match="did not finish a first 2-token request within 3 s"):
        check_completions(endpoint, [11, 12])
    with pytest.raises(EndpointError, match="no engine answers"):
        connect(hostile("huge chunk size"))  # a chunk size beyond any int the reader takes: an error, no traceback


def test_http_1_0_streams_and_odd_keys_get_answers_not_500(server):
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"prompt": [11, 12, 13], "max_tokens": 4, "stream": True}).encode()
    with socket.create_connection(
        (host, int(port)), timeout=30
    ) as sock:  # HTTP/1.0: no chunks, the stream ends at close
        sock.sendall(
            b"POST /v1/completions HTTP/1.0\r\nAuthorization: Bearer "
            + KEY.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 200") and answer.count(b'"text_completion"') == 4 and b"data: [DONE]" in answer
    status, kind, data = request(
        server, "GET", "/v1/models", headers={"Authorization": "Bearer ключ".encode().decode("latin-1")}
    )
    assert status == 401 and kind.startswith("application/json")  # a key of other characters is a wrong key
