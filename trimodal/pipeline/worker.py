"""The input task: one Ray task per input file reads it, decodes its media, tokenizes it and
writes its shards, length indexes and quarantine file straight to the output store, then
returns only metadata (shard entries, counts, tokens) to the driver.

    input task (CPU, one per input)            codec actors (one pool per codec, GPU if any)
    read records ─ chunk of `read_chunk_rows` ─► text: SentencePiece here, in the task
                                               ─► image/audio: decode + validate here (CPU),
                                                  batches of `batch_size` ──► CodecActor.encode
    kept rows, in input order ─► InputWriter ─► shards/part-<key>-NNNN.arrow + index/…
    rejected records ─► quarantine/<key>.jsonl
    return metadata ─► driver: completion marker, later the manifest

Why one task per input: an input's rows must end up together, in order, in shards whose names
and bytes do not depend on scheduling (that is what makes resume and retries exact). A task that
owns the input from read to write keeps them together without routing any code through the
driver, so the driver's work per input is one small marker: measured by `bench/bench_pipeline.py`
(figures in docs/tokenize.md). The trade-off is that an input is the unit of parallelism: a
corpus of a few huge files parallelizes only across those files (split such corpora into files
of ≤ a few GB, as public corpora ship), and a task retried after a node loss redoes its whole
input. Codec calls are asynchronous: up to `inflight_chunks` chunks are being encoded while the
task reads and decodes the next, so a GPU actor sees a queue, not a round trip.

A task that dies (SIGKILL, node loss) is retried by Ray (`max_retries`) and rewrites the same
shard names; temp files of the dead attempt are never referenced and are removed at commit.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, deque
from dataclasses import dataclass, field

import pyarrow as pa

from trimodal.dataset.schema import KIND_MODALITIES, MODALITIES, list_column
from trimodal.dataset.shards import SCHEMA, open_shard
from trimodal.dataset.storage import resolve
from trimodal.errors import SampleError
from trimodal.pipeline.codec_pool import REJECT
from trimodal.pipeline.encode import MISSING_REASON, PREPARERS, encode_items, read_records, sample_name
from trimodal.pipeline.writer import InputWriter, shard_table
from trimodal.tokenizers.placement import cpu_only

QUARANTINE_KEYS = ("id", "source", "origin", "reason", "message")


@dataclass
class TaskSpec:
    """What every input task of one job needs (plain data plus actor handles; put in the
    object store once per job)."""

    out: str
    sources: dict  # source name -> CorpusSource as a dict
    stages: dict  # modality -> Stage (see job.Stage)
    pools: dict  # modality -> list of CodecActor handles (image, audio)
    limits: dict
    shard_rows: int
    shard_bytes: int
    chunk_rows: int = 256
    inflight_chunks: int = 4
    only: str | None = None  # retokenize: the one modality re-encoded
    faults: dict = field(default_factory=dict)
    board: object = None  # progress.ProgressBoard actor handle: live counts while inputs run
    report_s: float = 2.0  # seconds between an input task's reports to the board


@functools.lru_cache(maxsize=4)
def _text_tokenizer(kind: str, path: str, options_json: str):
    # Cached per worker process: Ray reuses workers, so a job loads SentencePiece once per
    # process, not once per input.
    from trimodal.tokenizers.base import load_tokenizer

    return load_tokenizer(kind, path, **json.loads(options_json))


def _source(spec: TaskSpec, name: str):
    from trimodal.pipeline.sources import CorpusSource

    s = spec.sources[name]
    return CorpusSource(**s) if isinstance(s, dict) else s


class _Chunk:
    """Records of one chunk, with their codes arriving per modality (some asynchronously)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.codes: dict[str, list] = {}
        self.pending: list[tuple[str, list[int], object]] = []  # (modality, row indices, ObjectRef)


def _encode_chunk(spec: TaskSpec, chunk: _Chunk, kind: str, counter: list[int]) -> None:
    rows = chunk.rows
    for m in MODALITIES:
        st = spec.stages.get(m)
        if st is None or m not in KIND_MODALITIES[kind] or (spec.only and m != spec.only):
            continue
        codes: list = [None] * len(rows)
        chunk.codes[m] = codes
        todo: list[int] = []
        items: list = []
        for i, r in enumerate(rows):
            if r["reason"] is not None:
                continue
            name = sample_name(r["id"], r["origin"])
            item = r.get(m)
            if item is None:
                r["reason"] = MISSING_REASON.get((kind, m), f"missing_{m}")
                r["message"] = f"{name}: no {m} in the record"
                continue
            if st.prepared is not None:
                try:
                    item = PREPARERS[st.kind][1](item, name, st.prepared, spec.limits)
                except SampleError as e:
                    r["reason"], r["message"] = e.reason, str(e)
                    continue
                except Exception as e:  # a decoder bug on odd data must not end the job
                    r["reason"], r["message"] = f"corrupt_{m}", f"{name}: {type(e).__name__}: {e}"
                    continue
            r[m] = None  # the raw media is no longer needed
            todo.append(i)
            items.append(item)
        if not todo:
            continue
        names = [sample_name(rows[i]["id"], rows[i]["origin"]) for i in todo]
        if cpu_only(m):  # encoded here, where the text is; codecs run in their pools
            from trimodal.tokenizers.base import to_storage

            tok = _text_tokenizer(st.kind, st.path, json.dumps(st.options, sort_keys=True))
            for i, res in zip(todo, encode_items(tok, m, items, names)):
                if isinstance(res, SampleError):
                    rows[i]["reason"], rows[i]["message"] = res.reason, str(res)
                else:
                    codes[i] = to_storage(m, res)
            continue
        actors = spec.pools[m]
        for s in range(0, len(todo), st.batch_size):
            part = slice(s, s + st.batch_size)
            actor = actors[counter[0] % len(actors)]
            counter[0] += 1
            chunk.pending.append((m, todo[part], actor.encode.remote(items[part], names[part])))


def _finish_chunk(chunk: _Chunk, writer: InputWriter, bad: list, stats: Counter, new_codes: dict | None) -> None:
    """Wait for the chunk's codec calls, then hand kept rows to the writer (or, retokenizing,
    to `new_codes`) and rejected ones to `bad`."""
    import ray

    for m, idx, ref in chunk.pending:
        for i, res in zip(idx, ray.get(ref)):
            if isinstance(res, tuple) and res and res[0] == REJECT:
                chunk.rows[i]["reason"], chunk.rows[i]["message"] = res[1], res[2]
            else:
                chunk.codes[m][i] = res
    chunk.pending = []
    keep = [i for i, r in enumerate(chunk.rows) if r["reason"] is None]
    for r in chunk.rows:
        if r["reason"] is not None:
            bad.append({k: r.get(k) for k in QUARANTINE_KEYS})
    stats["records"] += len(chunk.rows)
    stats["kept"] += len(keep)
    stats["quarantined"] += len(chunk.rows) - len(keep)
    for m, c in chunk.codes.items():  # for the live progress line
        stats[f"tokens_{m}"] += sum(len(c[i]) for i in keep if c[i] is not None)
    if new_codes is not None:  # retokenize: merged with the parent's rows at the end
        (m,) = chunk.codes or {None: None}
        for i in keep:
            new_codes[chunk.rows[i]["id"]] = chunk.codes[m][i] if m else None
        return
    if keep:
        cols = {m: list_column([c[i] for i in keep]) for m, c in chunk.codes.items()}
        writer.add(shard_table([chunk.rows[i] for i in keep], cols))


def run_input(item: dict, spec: TaskSpec) -> dict:
    """Process one input end to end (see the module docstring); returns its metadata."""
    key, name, uri = item["key"], item["source"], item["uri"]
    src = _source(spec, name)
    writer = InputWriter(spec.out, key, spec.shard_rows, spec.shard_bytes, spec.faults)
    bad: list[dict] = []
    stats: Counter = Counter()
    inflight: deque[_Chunk] = deque()
    counter = [hash(key) & 0xFFFF]  # spreads inputs over a pool's actors
    retok = item.get("parent") is not None
    new_codes: dict | None = {} if retok else None
    parent_rows = _parent_rows(item) if retok else None
    wanted = (
        [{"id": i, "origin": o} for i, o in zip(parent_rows["id"].to_pylist(), parent_rows["origin"].to_pylist())]
        if retok
        else None
    )
    error = None
    rows: list[dict] = []

    def flush(rows: list[dict]) -> None:
        chunk = _Chunk(rows)
        _encode_chunk(spec, chunk, src.kind, counter)
        inflight.append(chunk)
        while len(inflight) > spec.inflight_chunks:
            _finish_chunk(inflight.popleft(), writer, bad, stats, new_codes)

    report = _Reporter(spec, key)
    records = read_records(src, name, uri, only=spec.only, wanted=wanted)
    while True:
        # Only a failure of the reader is the input's: an error from a codec call or the
        # writer is the job's and propagates (the task fails; the driver names the input).
        try:
            row = next(records)
        except StopIteration:
            break
        except Exception as e:  # the input broke part way: keep what was read before
            error = str(e) if uri in str(e) else f"{uri}: {type(e).__name__}: {e}"
            break
        rows.append(row)
        report.read += 1
        if len(rows) >= spec.chunk_rows:
            flush(rows)
            rows = []
        report.maybe(stats)
    if rows:
        flush(rows)
    while inflight:
        _finish_chunk(inflight.popleft(), writer, bad, stats, new_codes)
        report.maybe(stats)
    if retok:
        _merge_parent(item, spec, parent_rows, new_codes, writer, bad, error)
    entries, counts = writer.close(bad)
    return {
        "key": key,
        "uri": uri,
        "source": name,
        "status": "failed" if error else "done",
        "error": error,
        "records": item.get("records", stats["records"]) if retok else stats["records"],
        "rows": sum(e["rows"] for e in entries),
        "shards": entries,
        "quarantine": counts,
        "tokens": {m: sum(e["tokens"].get(m, 0) for e in entries) for m in MODALITIES},
        "bytes": sum(e["bytes"] for e in entries),
    }


class _Reporter:
    """Sends this input's running counts to the job's progress board every `report_s` seconds
    (one small message per interval, whatever the number of samples; fire and forget, so a slow
    board never slows the task). Counts are cumulative, so a lost message costs nothing."""

    def __init__(self, spec: TaskSpec, key: str):
        import time

        from trimodal.pipeline.readers.common import ReadCounter

        self.board, self.key, self.every = spec.board, key, spec.report_s
        self.clock, self.counter = time.monotonic, ReadCounter
        self.base = ReadCounter.n
        self.read = 0
        self.next = self.clock() + self.every

    def maybe(self, stats: Counter) -> None:
        if self.board is None or self.clock() < self.next:
            return
        self.next = self.clock() + self.every
        counts = {
            "read": self.read,
            "records": stats["records"],
            "kept": stats["kept"],
            "quarantined": stats["quarantined"],
            "bytes_read": self.counter.n - self.base,
            "tokens": {m: stats[f"tokens_{m}"] for m in MODALITIES if stats[f"tokens_{m}"]},
        }
        self.board.report.remote(self.key, counts)


# ---------------------------------------------------------------------------- retokenizing


def _parent_rows(item: dict) -> pa.Table:
    """The parent dataset's rows of this input, verified against the parent's manifest."""
    root = resolve(item["parent"])
    tables = [open_shard(root.join(e["path"]), e, verify="sha256") for e in item["parent_shards"]]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _merge_parent(item, spec: TaskSpec, parent: pa.Table, new_codes: dict, writer, bad: list, error) -> None:
    """Parent rows of the input with the one column replaced; rows whose new encoding failed
    (already in `bad`) or that the read never reached (`input_error`) are dropped. The parent's
    own quarantine records of the input are carried over first."""
    m = spec.only
    carried = _parent_quarantine(item["parent"], item["key"])
    rejected = {r["id"] for r in bad}
    keep, codes = [], []
    for j, (rid, src, origin) in enumerate(
        zip(parent["id"].to_pylist(), parent["source"].to_pylist(), parent["origin"].to_pylist())
    ):
        if rid in new_codes:
            keep.append(j)
            codes.append(new_codes[rid])
        elif rid not in rejected:  # the read stopped before reaching it
            bad.append(
                {
                    "id": rid,
                    "source": src,
                    "origin": origin,
                    "reason": "input_error",
                    "message": f"{rid} ({origin}): not re-read: {error}",
                }
            )
    bad[:0] = carried
    good = parent.take(pa.array(keep, pa.int64()))
    good = good.set_column(good.schema.get_field_index(m), m, list_column(codes))
    writer.add(good)


def _parent_quarantine(parent_uri: str, key: str) -> list[dict]:
    loc = resolve(parent_uri).join(f"quarantine/{key}.jsonl")
    if not loc.exists():
        return []
    lines = loc.read_bytes().decode().splitlines()
    return [{k: r.get(k) for k in QUARANTINE_KEYS} for r in (json.loads(x) for x in lines if x.strip())]


def copy_input(item: dict, spec: TaskSpec) -> dict:
    """Retokenizing an input whose source lacks the modality: its parent shards, indexes and
    quarantine file, byte for byte (each shard verified against the parent manifest first)."""
    from trimodal.dataset.quarantine import write_quarantine

    parent, out = resolve(item["parent"]), resolve(spec.out)
    entries = []
    for e in item["parent_shards"]:
        open_shard(parent.join(e["path"]), e, verify="sha256")
        out.join(e["path"]).write_bytes_atomic(parent.join(e["path"]).read_bytes())
        if e.get("index"):
            out.join(e["index"]["path"]).write_bytes_atomic(parent.join(e["index"]["path"]).read_bytes())
        entries.append(dict(e))
    counts = write_quarantine(spec.out, item["key"], _parent_quarantine(item["parent"], item["key"]))
    return {
        "key": item["key"],
        "uri": item["uri"],
        "source": item["source"],
        "status": item.get("status") or "done",
        "error": item.get("error"),
        "records": item.get("records") or 0,
        "rows": sum(e["rows"] for e in entries),
        "shards": entries,
        "quarantine": counts,
        "tokens": {m: sum(e["tokens"].get(m, 0) for e in entries) for m in MODALITIES},
        "bytes": sum(e["bytes"] for e in entries),
    }
