"""real/: the reference engine served on loopback (tiny on CPU, a real child process), the load
generator against it, the engine profiler, and the vLLM command lines (vLLM itself cannot run here)."""

import http.client
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("torch")

from capsim.capsearch.capacity.slo import TbtTtft  # noqa: E402
from capsim.profiles.errors import ProfileError  # noqa: E402
from capsim.profiles.latency_model import LatencyModel  # noqa: E402
from capsim.profiles.models import get_model  # noqa: E402
from capsim.real.client import EndpointError, connect  # noqa: E402
from capsim.real.engine_profiler import profile_endpoint  # noqa: E402
from capsim.real.loadgen import LoadOptions, run_load  # noqa: E402
from capsim.real.process import EngineStartError, ServerProcess, free_port, health  # noqa: E402
from capsim.real.reference import reference_server  # noqa: E402
from capsim.real.vllm import vllm_command, vllm_server  # noqa: E402
from capsim.sim import SystemSpec, simulate  # noqa: E402
from capsim.sim.early_stop import EarlyStop  # noqa: E402
from capsim.traces import WorkloadSpec  # noqa: E402

KEY = "test-key-do-not-leak"
SYSTEM = SystemSpec(
    model="tiny",
    hardware="cpu",
    scheduler="sarathi",
    token_budget=128,
    max_batch_size=8,
    num_kv_blocks=256,
    max_model_len=1024,
)
VOCAB = get_model("tiny").vocab


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    launcher = reference_server(SYSTEM, free_port(), str(folder / "engine.log"), dtype="float32", api_key=KEY)
    with launcher:
        yield launcher


def post(url: str, body, key: str | None = KEY, raw: bytes | None = None, headers: dict | None = None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    sent = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    connection.request("POST", "/v1/completions", body=raw if raw is not None else json.dumps(body), headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def events(data: bytes) -> list:
    lines = [line[5:].strip() for line in data.split(b"\n") if line.startswith(b"data:")]
    return [line if line == b"[DONE]" else json.loads(line) for line in lines]


def test_a_streamed_completion_has_exactly_max_tokens_and_usage(server):
    status, data = post(
        server.url,
        {
            "prompt": list(range(20, 60)),
            "max_tokens": 7,
            "stream": True,
            "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        },
    )
    assert status == 200
    chunks = events(data)
    assert chunks[-1] == b"[DONE]"
    tokens = [c for c in chunks[:-1] if c["choices"]]
    assert len(tokens) == 7
    assert [c["usage"]["completion_tokens"] for c in tokens] == list(range(1, 8))
    assert tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-2]["usage"] == {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47}
    status, data = post(server.url, {"prompt": "hello", "max_tokens": 3})  # not streamed; text read as bytes
    assert status == 200 and json.loads(data)["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (None, 400, "not valid JSON"),
        ({"prompt": [1, 2, VOCAB]}, 400, "token ids must lie in"),
        ({"prompt": [1, 2], "max_tokens": 2000}, 400, "exceeds the engine's max model length"),
        ({"prompt": [1, 2], "max_tokens": 0}, 400, "max_tokens must be a positive integer"),
        ({"prompt": [1, 2], "n": 2}, 400, "n and best_of must be 1"),
        ({"prompt": []}, 400, "non-empty list of token ids"),
        ({"prompt": [1, 2], "model": "Llama-3-8B"}, 404, "serves 'tiny'"),
    ],
)
def test_bad_requests_get_a_4xx_with_the_reason_and_the_server_stays_up(server, body, status, reason):
    got, data = post(server.url, body, raw=b"{nope" if body is None else None)
    assert got == status
    assert reason in json.loads(data)["message"]
    assert health(server.url)["status"] == "ok"


def test_a_wrong_key_or_an_oversized_body_is_refused(server):
    assert post(server.url, {"prompt": [1, 2]}, key="wrong")[0] == 401
    assert post(server.url, {"prompt": [1, 2]}, key=None)[0] == 401
    status, data = post(server.url, {"prompt": [1]}, headers={"Content-Length": str(1 << 30)}, raw=b"{}")
    assert status == 413
    assert health(server.url)["status"] == "ok"


def test_a_client_that_hangs_up_has_its_request_aborted(server):
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    body = json.dumps({"prompt": list(range(10, 30)), "max_tokens": 900, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    deadline = time.monotonic() + 10
    while health(server.url)["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health(server.url)["running"] == 0  # a 900-token request would still run for seconds


def test_the_load_generator_returns_the_simulators_schema_and_never_writes_the_key(server, tmp_path):
    endpoint = connect(server.url, KEY)
    assert endpoint.model == "tiny"
    spec = WorkloadSpec(trace="chat", num_requests=12, seed=3, max_total_tokens=200, output_scale=0.2)
    workload = spec.at_qps(6)
    real = run_load(endpoint, workload, LoadOptions(vocab=VOCAB, time_limit_s=60))
    simulated = simulate(SYSTEM, workload)
    assert real.requests.schema == simulated.requests.schema
    assert (real.column("status") == "finished").all()
    assert (real.column("generated_tokens") == workload.output_tokens).all()
    assert (real.column("first_token_s") > real.column("arrival_s")).all()
    assert TbtTtft(tbt=5.0, ttft=30.0, ttft_metric="ttft").score(real)["passed"]
    assert real.info["in_flight_cap_hits"] == 0 and real.info["kind"] == "real"
    real.write(tmp_path / "run")
    assert KEY not in repr(endpoint)
    for path in (tmp_path / "run").iterdir():
        assert KEY.encode() not in path.read_bytes()


def test_a_run_ends_at_its_time_limit_and_at_an_early_stop(server):
    endpoint = connect(server.url, KEY)
    workload = WorkloadSpec(trace="chat", num_requests=8, seed=1, max_total_tokens=1000).at_qps(50)
    started = time.monotonic()
    cut = run_load(endpoint, workload, LoadOptions(vocab=VOCAB, time_limit_s=1.0))
    assert time.monotonic() - started < 15
    unfinished = cut.column("status") == "unfinished"
    assert unfinished.any()
    assert all("time limit" in r for r in cut.column("reason")[unfinished])
    rule = EarlyStop(max_tbt=1e-6, max_tbt_violations=3)  # every gap is over 1 us
    stopped = run_load(endpoint, workload, LoadOptions(vocab=VOCAB, time_limit_s=60, early_stop=rule))
    assert stopped.info["stopped_early"].startswith("stopped early: more than 3 token gaps")
    time.sleep(1.0)
    assert health(server.url)["running"] == 0  # the cut-off requests were aborted, not left running


def test_an_endpoint_that_is_down_fails_fast_with_a_clear_error():
    started = time.monotonic()
    with pytest.raises(EndpointError, match="no engine answers"):
        connect(f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5
    with pytest.raises(EndpointError, match="not an http"):
        connect("127.0.0.1:8000")


class MultiTokenChunks(BaseHTTPRequestHandler):
    """A stream whose chunks carry two tokens each, as engines that batch their output send."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._reply(b'{"data": [{"id": "m"}]}', "application/json")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        counts = list(range(2, body["max_tokens"] + 1, 2)) + ([body["max_tokens"]] if body["max_tokens"] % 2 else [])
        for done in counts:
            time.sleep(0.02)
            chunk = {"choices": [{"text": "ab"}], "usage": {"completion_tokens": done}}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def _reply(self, data: bytes, kind: str):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class EventsInOneWrite(MultiTokenChunks):
    """One token an event, but the events of two tokens sent in one write every 20 ms: what a
    client reads from a busy server whose events pile up."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        event = b'data: {"choices": [{"text": "a"}]}\n\n'
        for done in range(0, body["max_tokens"], 2):
            time.sleep(0.02)
            self.wfile.write(event * min(2, body["max_tokens"] - done))
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    "server", [MultiTokenChunks, EventsInOneWrite], ids=["two tokens an event", "two events a read"]
)
def test_tokens_that_arrive_together_share_their_gap_instead_of_reading_as_zero(server):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        endpoint = connect(f"http://127.0.0.1:{httpd.server_address[1]}")
        workload = WorkloadSpec(trace="chat", num_requests=2, seed=0, max_total_tokens=60).at_qps(100)
        result = run_load(endpoint, workload, LoadOptions(vocab=VOCAB, time_limit_s=30))
    finally:
        httpd.shutdown()
    assert result.finished().all()
    assert (result.column("generated_tokens") == workload.output_tokens).all()
    assert (result.info["multi_token_chunks"] > 0) == (server is MultiTokenChunks)
    gaps = result.tbt()
    # Each pair is spread over its 20 ms (about 10 ms a gap); only a first pair's second token has no earlier one to
    # spread from.
    assert (gaps > 0.005).sum() == len(gaps) - len(workload.output_tokens)


def test_the_engine_profiler_measures_prefill_and_decode_points_that_fit(server, tmp_path):
    endpoint = connect(server.url, KEY)
    # 16 requests never decode together on an engine of 8 sequences: that point and the larger one are skipped, and said
    table = profile_endpoint(
        endpoint,
        get_model("tiny"),
        tmp_path / "engine.parquet",
        "cpu",
        max_model_len=1024,
        prompt_lengths=(16, 64, 128, 256),
        decode_batches=(1, 4, 8, 16),
        decode_contexts=(64, 256),
        repeats=2,
    )
    kinds = table.table.column("kind").to_pylist()
    assert kinds.count("prefill") == 4 and kinds.count("decode") == 6
    assert table.metadata["skipped_decode_points"] == [[16, 64], [16, 256]]
    assert (
        kinds.count("mixed") >= 2
    )  # prompts of 32 and 128 tokens joining 1 and 4 decodes (a point is dropped if it missed them)
    latency = table.table.column("latency_s").to_numpy()
    assert (latency > 0).all() and (latency < 1).all()
    assert table.metadata["engine"] == f"endpoint {server.url}" and table.metadata["source"] == "measured"
    LatencyModel.fit(table)  # it fits like any profile
    with pytest.raises(ProfileError, match="never decoded all together|did not finish"):
        profile_endpoint(
            endpoint,
            get_model("tiny"),
            tmp_path / "bad.parquet",
            max_model_len=1024,
            prompt_lengths=(),
            decode_batches=(12,),
            decode_contexts=(700,),
            repeats=1,
        )  # 12 x 700 tokens overflow its KV


def test_the_frontend_leaves_the_prefill_points_and_becomes_the_profiles_frontend_time():
    from capsim.profiles.batch import BatchShape
    from capsim.real.engine_profiler import _split_frontend

    shapes = [
        BatchShape((16,), (0,)),
        BatchShape((512,), (0,)),
        BatchShape((), (), (144,)),
        BatchShape((), (), (144,) * 4),
    ]
    latencies, frontend = _split_frontend(shapes, [0.007, 0.036, 0.003, 0.004])
    assert frontend == pytest.approx(
        0.004
    )  # 7 ms for 16 tokens alone, of which a step like a one-sequence decode: 3 ms
    assert latencies == pytest.approx([0.003, 0.032, 0.003, 0.004])
    assert _split_frontend(shapes[2:], [0.003, 0.004]) == ([0.003, 0.004], None)  # no prefill point: nothing to split


def test_prompts_beyond_the_token_budget_become_the_chunks_the_engine_prefills_them_in():
    from capsim.real.engine_profiler import _chunk_points

    ttft = {16: 0.004, 256: 0.013, 512: 0.029, 1024: 0.065, 700: 0.05}  # 700: not whole chunks of 256, left out
    points = _chunk_points(ttft, 256)
    assert [(p.prefill_chunks, p.prefill_contexts) for p, _ in points] == [((256,), (256,)), ((256,), (640,))]
    assert [latency for _, latency in points] == pytest.approx([0.016, 0.018])  # 512 - 256; (1024 - 512) / 2 chunks
    assert _chunk_points(ttft, None) == []  # budget unknown: every prompt counts as one batch
    assert _chunk_points({256: 0.02, 512: 0.019}, 256) == []  # noise inverted them: no negative point


def test_vllms_iteration_log_reads_as_its_batches(tmp_path):
    import numpy as np

    from capsim.real.vllm_iterations import batch_mix, read_iterations

    log = tmp_path / "vllm.log"
    log.write_text(  # vLLM 0.32's lines, with --enable-logging-iteration-details
        "(EngineCore pid=1) INFO 12-04 01:52:45 [core.py:133] Initializing a V1 LLM engine\n"
        "(APIServer pid=2) INFO 12-04 02:00:01 [loggers.py:199] Engine 000: Iteration(7): 1 context requests, 256 "
        "context tokens, "
        "3 generation requests, 3 generation tokens, iteration elapsed time: 12.50 ms, cpu KV cache usage: 3.1%\n"
        "(APIServer pid=2) INFO 12-04 02:00:01 [loggers.py:199] Engine 000: Iteration(8): 0 context requests, 0 "
        "context tokens, "
        "4 generation requests, 4 generation tokens, iteration elapsed time: 3.00 ms, cpu KV cache usage: 3.2%\n"
        "(APIServer pid=2) INFO 12-04 02:00:01 [loggers.py:199] Engine 000: Iteration(9): 0 context requests, 0 "
        "context tokens, "
        "0 generation requests, 0 generation tokens, iteration elapsed time: 0.00 ms (dummy), cpu KV cache usage: "
        "3.2%\n"
    )
    steps = read_iterations(log)
    assert steps.tolist() == [
        [1, 256, 3, 3, 0.0125],
        [0, 0, 4, 4, 0.003],
    ]  # the dummy step is none of the engine's batches
    mix = batch_mix(steps[:, 1], steps[:, 0], steps[:, 2])
    assert (
        mix["steps"] == 2 and mix["with_prefill"] == 0.5 and mix["prefill_tokens"] == 256 and mix["decode_seqs"] == 3.5
    )
    empty = tmp_path / "empty.log"
    empty.write_text("no iterations logged\n")
    assert np.array_equal(read_iterations(empty), np.zeros((0, 5)))


def test_flags_for_another_mode_are_refused():
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "capsim.capsearch.cli",
            "profile",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--token-budget",
            "256",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "for --endpoint only" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "capsim.capsearch.cli", "vllm-command", "--model", "tiny", "--model-dir", "x"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--model-dir is where --device cpu" in run.stderr


def test_sigterm_ends_open_streams_and_the_server_exits_cleanly(tmp_path):
    launcher = reference_server(
        SYSTEM, free_port(), str(tmp_path / "engine.log"), dtype="float32", batch_log=str(tmp_path / "batches.parquet")
    ).start()
    results = {}

    def long_request():
        results["status"], results["data"] = post(
            launcher.url, {"prompt": [11, 12], "max_tokens": 1000, "stream": True}, key=None
        )

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(1.5)
    launcher.process.send_signal(signal.SIGTERM)
    assert launcher.process.wait(30) == 0
    thread.join(10)
    chunks = events(results["data"])
    assert any("error" in c for c in chunks if isinstance(c, dict))  # told why, not left hanging
    assert (tmp_path / "batches.parquet").is_file()


def test_vllm_command_lines_map_each_policy():
    sarathi, env = vllm_command(SystemSpec(model="Llama-3-8B", scheduler="sarathi", max_batch_size=128, tp=2))
    assert sarathi[:3] == ["vllm", "serve", "meta-llama/Meta-Llama-3-8B"] and env == {}
    joined = " ".join(sarathi)
    for flag in (
        "--tensor-parallel-size 2",
        "--max-num-seqs 128",
        "--enable-chunked-prefill",
        "--max-num-batched-tokens 512",
        "--load-format dummy",
        "--max-model-len 8192",
        "--no-enable-prefix-caching",
    ):
        assert flag in joined
    v0, env = vllm_command(SystemSpec(model="Mistral-7B", scheduler="vllm_v0", num_kv_blocks=1000), port=8001)
    assert env == {"VLLM_USE_V1": "0"}
    assert (
        "--no-enable-chunked-prefill" in v0 and v0[v0.index("--num-gpu-blocks-override") + 1] == "1000" and "8001" in v0
    )
    v1, _ = vllm_command(SystemSpec(scheduler="vllm_v1", prefix_caching=True, pp=2), dummy_weights=False)
    assert "--enable-prefix-caching" in v1 and "dummy" not in v1 and v1[v1.index("--pipeline-parallel-size") + 1] == "2"
    with pytest.raises(ProfileError, match="no orca scheduler"):
        vllm_command(SystemSpec(scheduler="orca"))


def test_vllm_on_this_cpu_is_launched_as_the_cpu_build_refuses_and_serves_a_folder_made_here(tmp_path, monkeypatch):
    import sys

    from capsim.real.model_folder import model_folder
    from capsim.real.vllm import VLLM_PYTHON, check_cpu_system, hf_model_id

    system = SystemSpec(
        model="tiny",
        hardware="cpu",
        engine="vllm",
        scheduler="vllm_v1",
        token_budget=256,
        max_batch_size=16,
        block_size=32,
        num_kv_blocks=512,
    )
    monkeypatch.delenv(VLLM_PYTHON, raising=False)
    with pytest.raises(ProfileError, match="install_vllm_cpu.sh"):
        vllm_command(system, device="cpu")
    monkeypatch.setenv(VLLM_PYTHON, sys.executable)
    folder = model_folder(get_model("tiny"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["architectures"] == ["LlamaForCausalLM"]
        and config["vocab_size"] == VOCAB
        and config["num_key_value_heads"] == 4
    )
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == VOCAB and tokenizer["model"]["vocab"]["t5"] == 5
    argv, env = vllm_command(system, device="cpu", model_dir=str(folder))
    import capsim.real.vllm

    assert (
        argv[:2] == [sys.executable, str(Path(capsim.real.vllm.__file__).with_name("vllm_cpu_main.py"))] and env == {}
    )
    joined = " ".join(argv)
    for flag in (
        f"serve {folder} --served-model-name tiny",
        "--dtype float32",
        "--enforce-eager",
        "--block-size 32",
        "--num-gpu-blocks-override 512",
        "--max-num-batched-tokens 256",
        "--no-enable-prefix-caching",
    ):
        assert flag in joined
    assert "--disable-log-requests" not in joined  # gone from vLLM 0.11 on
    assert (
        0 < float(argv[argv.index("--gpu-memory-utilization") + 1]) < 0.5
    )  # weights + KV + slack, not 0.9 of the host
    for bad, fix in (
        (dict(block_size=16), "multiple of 32"),
        (dict(num_kv_blocks=None), "--num-kv-blocks"),
        (dict(tp=2), "--tp 1 --pp 1"),
    ):
        with pytest.raises(ProfileError, match=fix):
            check_cpu_system(SystemSpec(**{**system.to_dict(), **bad}))
    theirs = tmp_path / "theirs" / "tiny"
    theirs.mkdir(parents=True)
    (theirs / "config.json").write_text("{}")
    with pytest.raises(ProfileError, match="did not write"):
        model_folder(get_model("tiny"), tmp_path / "theirs")  # someone else's folder of that name: left alone
    assert (theirs / "config.json").read_text() == "{}"
    assert model_folder(get_model("tiny"), tmp_path) == folder  # its own folder: reused
    config_file = folder / "config.json"
    assert hf_model_id(str(config_file)) == str(folder)  # vLLM loads the folder, not its config file
    gpu, env = vllm_command(system, device="cuda:1")
    assert gpu[0] == "vllm" and env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_launching_vllm_where_it_is_not_installed_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm executable on the path
    with pytest.raises(EngineStartError, match="not installed"):
        vllm_server(SystemSpec(), free_port(), str(tmp_path / "vllm.log")).start(ready_timeout_s=5)


def test_an_engine_that_dies_on_start_reports_its_log(tmp_path):
    launcher = ServerProcess(
        [os.environ.get("PYTHON", "python3"), "-c", "import sys; print('bad flag'); sys.exit(3)"],
        f"http://127.0.0.1:{free_port()}",
        tmp_path / "log",
    )
    with pytest.raises(EngineStartError, match="exited with code 3") as error:
        launcher.start(ready_timeout_s=10)
    assert "bad flag" in str(error.value)


@pytest.mark.gpu
def test_the_reference_engine_serves_on_a_gpu(tmp_path):
    system = SystemSpec(model="tiny", hardware="H100-SXM", scheduler="sarathi", max_batch_size=32, num_kv_blocks=2048)
    with reference_server(system, free_port(), str(tmp_path / "engine.log"), device="cuda") as launcher:
        workload = WorkloadSpec(trace="chat", num_requests=16, seed=0, max_total_tokens=1024).at_qps(8)
        result = run_load(connect(launcher.url), workload, LoadOptions(vocab=VOCAB, time_limit_s=120))
    assert result.finished().all()
    assert (result.column("generated_tokens") == workload.output_tokens).all()


def test_requests_preempted_for_kv_memory_recompute_and_finish_exactly(tmp_path):
    """8 x (64 + 150) tokens in 48 blocks of 16: vllm_v0 must preempt by recompute, and every
    request still gets all its tokens, its re-prefill covering the tokens it had made."""
    import numpy as np

    from capsim.traces import Workload

    system = SystemSpec(
        model="tiny", hardware="cpu", scheduler="vllm_v0", max_batch_size=16, num_kv_blocks=48, max_model_len=512
    )
    with reference_server(system, free_port(), str(tmp_path / "engine.log"), dtype="float32") as launcher:
        workload = Workload.from_arrays(np.full(8, 64), np.full(8, 150), np.linspace(0, 0.1, 8))
        result = run_load(connect(launcher.url), workload, LoadOptions(vocab=VOCAB, time_limit_s=60))
        stats = health(launcher.url)
    assert stats["preemptions"] > 0 and stats["kv_blocks_used"] == 0
    assert result.finished().all() and (result.column("generated_tokens") == 150).all()
