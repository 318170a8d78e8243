"""RunResult: what a run produced, simulated or real, in one schema so every SLO scores both alike.

- requests: one row a request: arrival, scheduled-at (its first batch), first token, finish,
  status (finished | unfinished | rejected | failed) and why, lengths, preemptions, and the time of
  every output token (a list column: one flat float64 array plus offsets, no Python objects).
- batches: one row a batch, where known: replica, start and end, composition features, requests
  preempted, KV blocks in use; in order of start (then replica, engine).
- info: the system, the workload, the QPS, where the latencies came from.
Written as requests.parquet, batches.parquet and summary.json in a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capsim.common.files import strict_dumps, write_atomically
from capsim.profiles.batch import FEATURES

BATCH_COLUMNS = ("replica", "engine", "start_s", "end_s", *FEATURES, "preempted", "kv_blocks_used")
PERCENTILES = (50, 90, 99)


class RunResult:
    """`batches` may be given as a function that builds the table: it runs on first use. A capacity
    search scores requests only, so its trials never pay for their batch tables. `token_timeline`,
    where the simulator (or a compact file) gives it: (the distinct token times in whole
    microseconds, int64; each token's position among them), the token times being
    timeline[index] / 1e6; sim.compact writes a trial from it without sorting the tokens."""

    def __init__(self, requests: pa.Table, batches=None, info: dict | None = None, token_timeline=None):
        self.requests = requests
        self.token_timeline = token_timeline
        self._token_times = None
        self._summary = None
        self._batches = batches
        self.info = info if info is not None else {}

    @property
    def batches(self) -> pa.Table | None:
        if callable(self._batches):
            self._batches = self._batches()
        return self._batches

    def __repr__(self) -> str:
        return f"RunResult({self.requests.num_rows} requests, info keys {sorted(self.info)})"

    # ---- per-request figures, as numpy arrays ---------------------------------------------

    def column(self, name: str) -> np.ndarray:
        return self.requests.column(name).to_numpy(zero_copy_only=False)

    @property
    def token_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(every token time, flat; offsets: request i's are values[offsets[i]:offsets[i+1]]).
        Read once, without a copy where the column is one chunk (scoring reads it several times)."""
        if self._token_times is None:
            column = self.requests.column("token_times")
            array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            offsets = array.offsets.to_numpy(zero_copy_only=False)
            values = array.values.to_numpy(zero_copy_only=False)  # a slice's values are its parent's: cut to its own
            self._token_times = values[offsets[0] : offsets[-1]], offsets - offsets[0]
        return self._token_times

    def ttft(self) -> np.ndarray:
        return self.column("first_token_s") - self.column("arrival_s")

    def scheduling_delay(self) -> np.ndarray:
        return self.column("scheduled_s") - self.column("arrival_s")

    def e2e(self) -> np.ndarray:
        return self.column("finish_s") - self.column("arrival_s")

    def tbt(self) -> np.ndarray:
        """Every gap between consecutive tokens of a request, all requests together."""
        values, offsets = self.token_times
        gaps = np.diff(values)
        starts = offsets[1:-1] - 1  # the gap from one request's last token to the next one's first
        keep = np.ones(len(gaps), dtype=bool)
        keep[starts[(starts >= 0) & (starts < len(gaps))]] = False
        return gaps[keep]

    def tpot(self) -> np.ndarray:
        """Per request: mean gap between tokens after the first (NaN with fewer than two tokens)."""
        values, offsets = self.token_times
        counts = np.diff(offsets)
        tpot = np.full(len(counts), np.nan)
        many = counts >= 2
        last = values[offsets[1:][many] - 1]
        first = values[offsets[:-1][many]]
        tpot[many] = (last - first) / (counts[many] - 1)
        return tpot

    def finished(self) -> np.ndarray:
        return self.column("status") == "finished"

    def only(self, mask: np.ndarray) -> RunResult:
        """The same run, keeping only the requests where mask is true (batches as they were)."""
        return RunResult(self.requests.filter(pa.array(np.asarray(mask, dtype=bool))), self._batches, self.info)

    # ---- summary ----------------------------------------------------------------------------------

    def summary(self) -> dict:
        """The run's figures (computed once: writing the files and the command's output both read them)."""
        if self._summary is None:
            self._summary = self._summarize()
        return self._summary

    def _summarize(self) -> dict:
        status = self.column("status")
        summary = {
            "info": self.info,
            "requests": {s: int((status == s).sum()) for s in ("finished", "unfinished", "rejected", "failed")},
        }
        for name, values in (
            ("ttft_s", self.ttft()),
            ("tbt_s", self.tbt()),
            ("tpot_s", self.tpot()),
            ("e2e_s", self.e2e()),
            ("scheduling_delay_s", self.scheduling_delay()),
        ):
            summary[name] = describe_values(values)
        values, _ = self.token_times
        arrival = self.column("arrival_s")
        if len(values):
            span = float(values.max() - arrival.min())
            summary["throughput"] = {
                "output_tokens_per_s": len(values) / span if span > 0 else 0.0,
                "finished_requests_per_s": float(self.finished().sum()) / span if span > 0 else 0.0,
            }
        summary["preemptions"] = int(self.column("preemptions").sum())
        if self.batches is not None and self.batches.num_rows:
            sizes = self.batches.column("prefill_seqs").to_numpy() + self.batches.column("decode_seqs").to_numpy()
            used = self.batches.column("kv_blocks_used").to_numpy()
            summary["batches"] = {
                "count": self.batches.num_rows,
                "size": describe_values(sizes),
                "tokens": describe_values(self.batches.column("tokens").to_numpy()),
            }
            total = self.info.get("kv_blocks_per_engine")
            if total:
                summary["kv_use"] = {"mean": float(used.mean() / total), "max": float(used.max() / total)}
        return summary

    # ---- files ------------------------------------------------------------------------------------

    def write(self, folder: str | Path) -> Path:
        folder = Path(folder)
        # Dictionaries for the text columns only: building one for a million distinct token times costs
        # as much as the write, then is dropped.
        write_atomically(
            folder / "requests.parquet",
            lambda tmp: pq.write_table(self.requests, tmp, compression="zstd", use_dictionary=["status", "reason"]),
        )
        if self.batches is not None:
            write_atomically(
                folder / "batches.parquet",
                lambda tmp: pq.write_table(self.batches, tmp, compression="zstd", use_dictionary=False),
            )
        text = strict_dumps(self.summary(), indent=2)
        write_atomically(folder / "summary.json", lambda tmp: Path(tmp).write_text(text))
        return folder

    @classmethod
    def read(cls, folder: str | Path) -> RunResult:
        folder = Path(folder)
        batches = pq.read_table(folder / "batches.parquet") if (folder / "batches.parquet").exists() else None
        info = json.loads((folder / "summary.json").read_text())["info"]
        return cls(pq.read_table(folder / "requests.parquet"), batches, info)

    def write_chrome_trace(self, path: str | Path) -> Path:
        """The batches as a Chrome/Perfetto trace: one track a replica engine, one slice a batch."""
        rows = self.batches.to_pylist() if self.batches is not None else []
        events = [
            {
                "name": f"{r['prefill_seqs']}P+{r['decode_seqs']}D {r['tokens']}tok",
                "ph": "X",
                "pid": r["replica"],
                "tid": r["engine"],
                "ts": r["start_s"] * 1e6,
                "dur": (r["end_s"] - r["start_s"]) * 1e6,
                "args": {k: r[k] for k in (*FEATURES, "preempted", "kv_blocks_used")},
            }
            for r in rows
        ]
        text = json.dumps({"traceEvents": events, "displayTimeUnit": "ms"})
        path = Path(path)
        write_atomically(path, lambda tmp: Path(tmp).write_text(text))
        return path


def describe_values(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"count": 0}
    return {
        "count": int(len(values)),
        "mean": float(values.mean()),
        **{f"p{p}": float(q) for p, q in zip(PERCENTILES, np.percentile(values, PERCENTILES))},
        "max": float(values.max()),
    }


def to_microseconds(seconds) -> np.ndarray:
    """Times rounded to whole microseconds: far finer than any SLO, and what lets the trial cache
    keep a trial in its compact form (sim.compact) and give back the same floats. A float64
    array is rounded in place (token times: no temporaries the size of the trial)."""
    values = (
        seconds
        if isinstance(seconds, np.ndarray) and seconds.dtype == np.float64
        else np.asarray(seconds, dtype=np.float64)
    )
    np.multiply(values, 1e6, out=values)
    np.round(values, out=values)
    return np.divide(values, 1e6, out=values)


def requests_table(
    ids,
    replica,
    arrival,
    scheduled,
    first,
    finish,
    status,
    reason,
    prompt,
    output,
    generated,
    preemptions,
    token_values: np.ndarray,
    token_offsets: np.ndarray,
) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "replica": pa.array(replica, pa.int32()),
            "arrival_s": pa.array(arrival, pa.float64()),
            "scheduled_s": pa.array(scheduled, pa.float64()),
            "first_token_s": pa.array(first, pa.float64()),
            "finish_s": pa.array(finish, pa.float64()),
            "status": pa.array(status, pa.string()),
            "reason": pa.array(reason, pa.string()),
            "prompt_tokens": pa.array(prompt, pa.int64()),
            "output_tokens": pa.array(output, pa.int64()),
            "generated_tokens": pa.array(generated, pa.int64()),
            "preemptions": pa.array(preemptions, pa.int32()),
            "token_times": pa.ListArray.from_arrays(
                pa.array(token_offsets, pa.int32()), pa.array(token_values, pa.float64())
            ),
        }
    )
