"""Bad input, as a careful user and a careless one type it: every case through the real `capsim`
command, classified as a clear error (exit 2, one line, nothing written), a traceback, a hang, or
a wrong value (exit 0 where the input must be refused).

    python bench/bench_bad_inputs.py

The fuzz tests (tests/test_fuzz_inputs.py) add ~800 generated files and configs in process.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

CAPSIM = str(Path(sys.executable).parent / "capsim")
ROOT = Path(__file__).resolve().parents[1]


def trace_files(folder: Path) -> list[tuple[str, Path]]:
    header = "num_prefill_tokens,num_decode_tokens"
    csvs = {
        "token count 1e30": f"{header}\n1e30,5\n",
        "token count 2^63": f"{header}\n9223372036854775808,5\n",
        "negative tokens": f"{header}\n-3,5\n",
        "zero tokens": f"{header}\n0,5\n",
        "fractional tokens": f"{header}\n3.5,5\n",
        "nan tokens": f"{header}\nnan,5\n",
        "inf tokens": f"{header}\ninf,5\n",
        "text tokens": f"{header}\nabc,5\n",
        "empty cell": f"{header}\n,5\n",
        "missing column": "num_prefill_tokens\n5\n",
        "unknown header": "a,b\n1,2\n",
        "header only": f"{header}\n",
        "empty file": "",
        "blank lines only": "\n\n\n",
        "extra field": f"{header}\n1,2,3\n",
        "short row": f"{header}\n1\n",
        "open quote": f'{header},text\n10,5,"abc\n11,6,def\n',
        "nan arrival": f"{header},arrived_at\n1,2,nan\n",
        "bad azure date": "ContextTokens,GeneratedTokens,TIMESTAMP\n5,5,yesterday\n",
        "burstgpt all failed": "Request tokens,Response tokens,Timestamp\n5,0,1\n",
    }
    files = []
    for name, text in csvs.items():
        path = folder / f"{len(files)}.csv"
        path.write_text(text)
        files.append((name, path))
    jsonl = {
        "mooncake hash_ids nested": '{"timestamp": 1, "input_length": 5, "output_length": 3, "hash_ids": [[1]]}\n',
        "mooncake hash_ids string": '{"timestamp": 1, "input_length": 5, "output_length": 3, "hash_ids": "ab"}\n',
        "mooncake huge hash": '{"timestamp": 1, "input_length": 5, "output_length": 3, "hash_ids": [1e400]}\n',
        "mooncake bool length": '{"timestamp": 1, "input_length": true, "output_length": 3}\n',
        "mooncake missing field": '{"timestamp": 1, "input_length": 5}\n',
        "mooncake truncated": '{"timestamp": 1, "inp',
        "mooncake array line": '{"timestamp": 1, "input_length": 5, "output_length": 3}\n[1, 2]\n',
        "mooncake deep nesting": "{" + '"a":' * 1 + "[" * 100000 + "]" * 100000 + "}\n",
        "mooncake 1e999 timestamp": '{"timestamp": 1e999, "input_length": 5, "output_length": 3}\n',
    }
    for name, text in jsonl.items():
        path = folder / f"{len(files)}.jsonl"
        path.write_text(text)
        files.append((name, path))
    good = pa.table({"prompt_tokens": [10, 20], "output_tokens": [5, 6]})
    parquets = {
        "parquet bad metadata": good.replace_schema_metadata({b"capsim.workload": b"{"}),
        "parquet metadata a list": good.replace_schema_metadata({b"capsim.workload": b"[]"}),
        "parquet string lengths": pa.table({"prompt_tokens": ["a", "b"], "output_tokens": [5, 6]}),
        "parquet fractional prefix group": pa.table(
            {"prompt_tokens": [10], "output_tokens": [5], "prefix_group": [1.5], "prefix_tokens": [2]}
        ),
        "parquet prefix longer than prompt": pa.table(
            {"prompt_tokens": [10], "output_tokens": [5], "prefix_group": [1], "prefix_tokens": [20]}
        ),
        "parquet no rows": good.slice(0, 0),
    }
    for name, table in parquets.items():
        path = folder / f"{len(files)}.parquet"
        pq.write_table(table, path)
        files.append((name, path))
    truncated = folder / "truncated.parquet"
    truncated.write_bytes((folder / f"{len(files) - 1}.parquet").read_bytes()[:-30])
    files.append(("parquet truncated", truncated))
    files.append(("a folder", folder))
    files.append(("no such file", folder / "nope.csv"))
    return files


def configs(folder: Path) -> list[tuple[str, Path]]:
    base = yaml.safe_load((ROOT / "capsearch/experiments/configs/mistral7b_strict.yml").read_text())
    edits = {
        "chunk_size a string": ("schedulers", 2, "chunk_size", "512"),
        "granularity 0": (None, None, "granularity", 0),
        "granularity 5": (None, None, "granularity", 5),
        "start_qps inf": ("traces", 0, "start_qps", float("inf")),
        "start_qps negative": ("traces", 0, "start_qps", -1),
        "slos a mapping": (None, None, "slos", {"kind": "tbt_ttft"}),
        "num_requests 10^12": ("traces", 0, "num_requests", 10**12),
        "tp_dimension 3.5": ("parallel_spec", 0, "tp_dimension", 3.5),
        "tp_dimension 3": ("parallel_spec", 0, "tp_dimension", 3),
        "batch_size true": ("schedulers", 0, "batch_size", True),
        "max_seq_len 1": ("traces", 0, "max_seq_len", 1),
        "seed -1": (None, None, "seed", -1),
        "seed 2^80": (None, None, "seed", 2**80),
        "hardware a list": (None, None, "hardware", ["A100"]),
        "scheduler name a list": ("schedulers", 0, "name", ["x"]),
        "trace_file a number": ("traces", 0, "trace_file", 5),
        "cv a string": ("traces", 0, "cv", "x"),
        "unknown arrival": ("traces", 0, "arrival", "weird"),
        "memory_utilization 2": (None, None, "memory_utilization", 2),
        "replicas 10^9": (None, None, "replicas", 10**9),
        "num_kv_blocks 10^15": (None, None, "num_kv_blocks", 10**15),
        "block_size 10^9": (None, None, "block_size", 10**9),
        "max_trials 10^9": (None, None, "max_trials", 10**9),
        "unknown key": (None, None, "colour", "red"),
        "unknown scheduler": ("schedulers", 0, "scheduler", "fastest"),
        "unknown model": ("models", 0, "identifier", "gpt-9"),
        "parallel_specs not a list": ("models", 0, "parallel_specs", "tp_1"),
        "parallel_specs names a list": ("models", 0, "parallel_specs", [[]]),
        "unknown parallel spec": ("models", 0, "parallel_specs", ["tp_9"]),
        "schedulers empty": (None, None, "schedulers", []),
    }
    files = []
    for name, (section, index, key, value) in edits.items():
        data = copy.deepcopy(base)
        (data if section is None else data[section][index])[key] = value
        files.append((name, data))
    twice = copy.deepcopy(base)
    twice["schedulers"].append(copy.deepcopy(twice["schedulers"][0]))
    files.append(("duplicate scheduler names", twice))
    slo_text = copy.deepcopy(base)
    slo_text["slos"][0]["tbt"] = "0.1"
    files.append(("slo tbt a string", slo_text))
    slo_zero = copy.deepcopy(base)
    slo_zero["slos"][0]["ttft_percentile"] = 0
    files.append(("slo percentile 0", slo_zero))
    out = []
    for name, data in files:
        path = folder / f"config{len(out)}.yml"
        path.write_text(yaml.safe_dump(data))
        out.append((name, path))
    for name, text in {
        "config empty": "",
        "config a list": "[1, 2]",
        "config bad yaml": "{unclosed",
        "config tabs": "\t- x",
    }.items():
        path = folder / f"config{len(out)}.yml"
        path.write_text(text)
        out.append((name, path))
    out.append(("config a folder", folder))
    return out


FLAGS = {
    "--granularity 0": ["search", "--granularity", "0"],
    "--granularity 1": ["search", "--granularity", "1"],
    "--ttft-percentile 0": ["search", "--slo-type", "tbt_ttft", "--ttft-percentile", "0"],
    "--tbt-percentile 101": ["search", "--tbt-percentile", "101"],
    "--tbt-slo -1": ["search", "--tbt-slo", "-1"],
    "--tbt-slo nan": ["search", "--tbt-slo", "nan"],
    "--start-qps 0": ["search", "--start-qps", "0"],
    "--start-qps inf": ["search", "--start-qps", "inf"],
    "--tp 3 on 32 heads": ["search", "--model", "Llama-3-8B", "--tp", "3"],
    "--max-model-len 100000 on an 8K model": [
        "simulate",
        "--model",
        "Llama-3-8B",
        "--qps",
        "1",
        "--max-model-len",
        "100000",
    ],
    "--qps nan": ["simulate", "--qps", "nan"],
    "--qps -1": ["simulate", "--qps", "-1"],
    "--prompt-scale 1e30": ["simulate", "--qps", "1", "--prompt-scale", "1e30"],
    "--prompt-scale inf": ["simulate", "--qps", "1", "--prompt-scale", "inf"],
    "-n 10^11": ["simulate", "--qps", "1", "-n", "100000000000"],
    "-n 0": ["simulate", "--qps", "1", "-n", "0"],
    "--replicas 10^6": ["simulate", "--qps", "1", "--replicas", "1000000"],
    "--model unknown": ["simulate", "--qps", "1", "--model", "gpt-9"],
    "--hardware unknown": ["simulate", "--qps", "1", "--hardware", "Z9"],
    "--time-limit 0": ["search", "--time-limit", "0"],
    "--values empty": ["sweep", "--values", ","],
    "--values text": ["sweep", "--values", "a,b"],
    "-o a file's child": ["simulate", "--qps", "1", "-o", "{file}/sub"],
    "-o /proc": ["simulate", "--qps", "1", "-o", "/proc/nope"],
    "-o holding results": ["simulate", "--qps", "1", "-n", "8", "-o", "{full}"],
    "--ray-address dead": ["search", "--executor", "ray", "--ray-address", "127.0.0.1:9"],
    "--ray-address nonsense": ["search", "--executor", "ray", "--ray-address", "nonsense"],
    "cache prune --max-size 10Q": ["cache", "prune", "--max-size", "10Q"],
    "cache prune --older-than soon": ["cache", "prune", "--older-than", "soon"],
    "--tbt-slo and --tbt-slo-value": ["search", "--tbt-slo", "0.1", "--tbt-slo-value", "0.2"],
    "--config with --model": ["search", "--config-path", "mistral7b_strict", "--model", "Yi-34B"],
}

# The trust issue's cases: files lost, absurd answers, crashes and hangs (run after FLAGS).
TRUST = {
    "traces convert onto its input": ["traces", "convert", "{trace}", "-o", "{trace}", "--overwrite"],
    "traces convert onto a CSV": ["traces", "convert", "{trace}", "-o", "{other_csv}"],
    "cache prune of a home folder": ["cache", "prune", "--cache-dir", "{home}", "--max-size", "0"],
    "search --cache-dir a home folder": ["search", "--cache-dir", "{home}", "-n", "16", "--max-iterations", "1"],
    "-o a source tree --overwrite": ["simulate", "--qps", "1", "-n", "8", "-o", "{tree}", "--overwrite"],
    "vllm_v0 chunk below the prompts (search)": [
        "search",
        "--model",
        "Mistral-7B",
        "--scheduler",
        "vllm_v0",
        "--chunk-size",
        "512",
        "-n",
        "32",
    ],
    "vllm_v0 chunk below the prompts (simulate)": [
        "simulate",
        "--model",
        "Mistral-7B",
        "--scheduler",
        "vllm_v0",
        "--chunk-size",
        "512",
        "-n",
        "32",
        "--qps",
        "1",
    ],
    "--tbt-percentile 0.3": ["search", "--tbt-percentile", "0.3"],
    "--tbt-percentile 25": ["search", "--tbt-percentile", "25"],
    "TPOT and slack clauses": ["search", "--tpot-slo", "0.1", "--ttft-slack-slo", "0.5"],
    "plan --target-qps nan": ["plan", "--target-qps", "nan"],
    "plan --target-qps inf": ["plan", "--target-qps", "inf"],
    "plan --target-qps 1e9": ["plan", "--target-qps", "1e9"],
    "plan --budget nan": ["plan", "--budget", "nan"],
    "plan --budget 1e12": ["plan", "--budget", "1e12"],
    "plan --gpus 100000": ["plan", "--gpus", "100000"],
    "plan --hardware ''": ["plan", "--target-qps", "5", "--hardware", ""],
    "plan --space in UTF-16": ["plan", "--target-qps", "5", "--space", "{utf16}"],
    "plan --space alias bomb": ["plan", "--target-qps", "5", "--space", "{bomb}"],
    "config alias bomb": ["search", "--config-path", "{bomb}"],
    "config nested 10,000 deep": ["search", "--config-path", "{deep}"],
    "cache prune --max-size 400 digits": ["cache", "prune", "--max-size", "9" * 400],
    "--disagg 99999999P1D": ["simulate", "--qps", "1", "--disagg", "99999999P1D"],
    "duplicated CSV column": ["traces", "show", "{dup_csv}"],
    "serve --api-key ''": ["serve", "--model", "tiny", "--device", "cpu", "--api-key", ""],
}
# Issue 28: measurements capsim cannot read, quantizations a GPU cannot run, options of another engine.
FIDELITY = {
    "simulate --against a folder that holds no result": ["simulate", "--against", "{home}"],
    "simulate --against with a load of its own": ["simulate", "--against", "{run}", "--qps", "2"],
    "simulate --against with another model": ["simulate", "--against", "{run}", "--model", "Llama-3-8B"],
    "simulate --against a run that did not record its workload": ["simulate", "--against", "{old_run}"],
    "simulate --against onto the folder it replays": ["simulate", "--against", "{run}", "-o", "{run}", "--overwrite"],
    "validate --measurements a bench folder": ["validate", "--measurements", "{run}"],
    "validate a CSV that is no silicon sample": ["validate", "--measurements", "{other_csv}"],
    "validate a measurements file that is absent": ["validate", "--measurements", "{home}/none.csv"],
    "validate --engine tgi": ["validate", "--engine", "tgi"],
    "validate --quant fp4": ["validate", "--quant", "fp4"],
    "validate --dataset-entries on InferenceMAX runs only": [
        "validate",
        "--model",
        "Llama-3.1-70B",
        "--engine",
        "vllm",
        "--dataset-entries",
        "100",
    ],
    "simulate --quant fp8 on an A100": [
        "simulate",
        "--hardware",
        "A100-SXM",
        "--quant",
        "fp8",
        "--qps",
        "1",
        "-n",
        "8",
    ],
    "simulate --kv-cache-dtype fp8 on an A100 PCIe": [
        "simulate",
        "--hardware",
        "A100-PCIe",
        "--kv-cache-dtype",
        "fp8",
        "--qps",
        "1",
    ],
    "simulate --quant int4": ["simulate", "--quant", "int4", "--qps", "1"],
    "simulate --async-scheduling with SGLang": [
        "simulate",
        "--engine",
        "sglang",
        "--async-scheduling",
        "--qps",
        "1",
        "-n",
        "8",
    ],
    "simulate --prefix-caching with sarathi": ["simulate", "--prefix-caching", "--qps", "1", "-n", "8"],
}


def trust_files(folder: Path) -> dict[str, Path]:
    """The files the trust cases name: a trace, a home folder and a source tree of someone's own, bad YAML."""
    places = {name: folder / "trust" / name for name in ("home", "tree")}
    for place in places.values():
        place.mkdir(parents=True)
    (places["home"] / ".bashrc").write_text("mine")
    (places["home"] / ".ssh").mkdir()
    (places["tree"] / "notes.md").write_text("mine")
    files = {
        "trace": "num_prefill_tokens,num_decode_tokens\n10,5\n",
        "other_csv": "keep,me\n1,2\n",
        "dup_csv": "num_prefill_tokens,num_decode_tokens,num_prefill_tokens\n10,5,7\n",
        "bomb": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
        "deep": "a: " + "[" * 10000 + "]" * 10000 + "\n",
    }
    for name, text in files.items():
        places[name] = folder / "trust" / f"{name}.{'yml' if name in ('bomb', 'deep') else 'csv'}"
        places[name].write_text(text)
    places["utf16"] = folder / "trust" / "space16.yml"
    places["utf16"].write_bytes("hardware: [H100]\n".encode("utf-16"))
    # a load run to replay, and the same run as written before runs recorded their workload
    places["run"], places["old_run"] = folder / "trust" / "run", folder / "trust" / "old_run"
    for place in (places["run"], places["old_run"]):
        subprocess.run(
            [CAPSIM, "simulate", "--model", "Mistral-7B", "--qps", "1", "-n", "8", "-o", str(place)],
            capture_output=True,
            check=True,
        )
    summary = places["old_run"] / "summary.json"
    document = json.loads(summary.read_text())
    del document["info"]["replay"]
    summary.write_text(json.dumps(document))
    return places


def classify(argv: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run([CAPSIM, *argv], capture_output=True, text=True, timeout=120, cwd=cwd)
    except subprocess.TimeoutExpired:
        return "hang"
    if "Traceback" in done.stderr:
        return "traceback"
    if done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1:
        return "clear error"
    return "wrong value" if done.returncode == 0 else f"exit {done.returncode}"


def _sim(*args: str) -> list[str]:
    return ["simulate", "--hardware", "H200", "--qps", "1", "-n", "8", *args]


MOE = {  # issue 31: mixtures of experts, expert and attention-data parallelism, precisions, speculation
    "a MoE the database cannot price there": _sim("--model", "gpt-oss-120b", "--engine", "trtllm", "--tp", "4"),
    "an EP that does not divide TP x DP": _sim("--model", "gpt-oss-120b", "--tp", "4", "--ep", "3"),
    "an EP that does not divide the experts": _sim(
        "--model", "Mixtral-8x7B", "--tp", "2", "--dp-attention", "8", "--ep", "16"
    ),
    "vLLM with EP short of TP x DP": _sim("--model", "gpt-oss-120b", "--tp", "8", "--ep", "4"),
    "EP on a dense model": _sim("--model", "Llama-3.1-8B", "--tp", "2", "--ep", "2"),
    "attention DP on the reference engine": _sim(
        "--model", "gpt-oss-120b", "--engine", "reference", "--dp-attention", "2", "--ep", "2"
    ),
    "attention DP with PP": _sim("--model", "gpt-oss-120b", "--tp", "2", "--pp", "2", "--dp-attention", "2"),
    "speculation in a disaggregated pool": _sim(
        "--model", "gpt-oss-120b", "--tp", "2", "--disagg", "1P1D", "--spec-tokens", "2", "--acceptance-rate", "0.7"
    ),
    "a decode EP that does not divide its GPUs": _sim(
        "--model", "gpt-oss-120b", "--tp", "2", "--disagg", "1P1D", "--decode-dp-attention", "2", "--decode-ep", "3"
    ),
    "NVFP4 on a Hopper GPU": _sim("--model", "gpt-oss-120b", "--tp", "8", "--quant", "nvfp4"),
    "an FP4 KV cache": _sim("--model", "gpt-oss-120b", "--tp", "8", "--kv-cache-dtype", "nvfp4"),
    "acceptance rate 0": _sim("--model", "gpt-oss-120b", "--tp", "8", "--spec-tokens", "2", "--acceptance-rate", "0"),
    "acceptance rate 1.2": _sim(
        "--model", "gpt-oss-120b", "--tp", "8", "--spec-tokens", "2", "--acceptance-rate", "1.2"
    ),
    "acceptance rates for 3 of 2 drafts": _sim("--spec-tokens", "2", "--acceptance-rate", "0.9,0.8,0.7"),
    "an acceptance rate without drafts": _sim("--acceptance-rate", "0.7"),
    "drafts without an acceptance rate": _sim("--spec-tokens", "2"),
    "a draft model without its cost": _sim("--spec-tokens", "2", "--acceptance-rate", "0.7", "--spec-method", "draft"),
    "speculation on the reference engine": _sim(
        "--engine", "reference", "--spec-tokens", "2", "--acceptance-rate", "0.7"
    ),
    "plan: a MoE layout for a dense model": [
        "plan",
        "--model",
        "Llama-3.1-8B",
        "--target-qps",
        "4",
        "--moe-layout",
        "dp_ep",
    ],
    "plan: an unknown MoE layout": ["plan", "--model", "gpt-oss-120b", "--target-qps", "4", "--moe-layout", "wide"],
    "plan: an unknown precision": ["plan", "--model", "gpt-oss-120b", "--target-qps", "4", "--quant", "int3"],
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "traces").mkdir()
        (folder / "configs").mkdir()
        (folder / "file").write_text("x")
        (folder / "full").mkdir()
        (folder / "full" / "summary.json").write_text("{}")
        cases = [("trace files", name, ["traces", "show", str(p)]) for name, p in trace_files(folder / "traces")]
        cases += [
            ("configs", name, ["search", "--config-path", str(p), "-n", "16", "--max-iterations", "1"])
            for name, p in configs(folder / "configs")
        ]
        cases += [
            ("options and paths", name, [a.format(file=folder / "file", full=folder / "full") for a in argv])
            for name, argv in FLAGS.items()
        ]
        places = trust_files(folder)
        cases += [("issue 27 (trust)", name, [a.format(**places) for a in argv]) for name, argv in TRUST.items()]
        cases += [("issue 28 (fidelity)", name, [a.format(**places) for a in argv]) for name, argv in FIDELITY.items()]
        cases += [("issue 31 (MoE)", name, argv) for name, argv in MOE.items()]
        cache = ["--cache-dir", str(folder / "cache")]
        argvs = [
            argv
            + (
                cache
                if argv[0] in ("search", "sweep", "cache")
                and argv[:2] != ["cache", "prune"]
                and "--cache-dir" not in argv
                else []
            )
            for _, _, argv in cases
        ]
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda a: classify(a, folder), argvs))
    table = Counter((category, outcome) for (category, _, _), outcome in zip(cases, outcomes))
    print(f"{'inputs':<20}{'tried':>7}{'clear error':>13}{'traceback':>11}{'hang':>6}{'wrong value':>13}{'other':>7}")
    for category in dict.fromkeys(c for c, _, _ in cases):
        counts = {o: table[(category, o)] for o in ("clear error", "traceback", "hang", "wrong value")}
        tried = sum(n for (c, _), n in table.items() if c == category)
        print(
            f"{category:<20}{tried:>7}{counts['clear error']:>13}{counts['traceback']:>11}{counts['hang']:>6}"
            f"{counts['wrong value']:>13}{tried - sum(counts.values()):>7}"
        )
    for (category, name, _), outcome in zip(cases, outcomes):
        if outcome != "clear error":
            print(f"  {category}: {name}: {outcome}")


if __name__ == "__main__":
    main()
