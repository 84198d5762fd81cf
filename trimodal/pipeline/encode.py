"""The per-block work of the tokenize graph: reading inputs into record blocks, decoding media on
CPU tasks, and the tokenizer stage that Ray Data runs in an actor pool (one pool per modality).

Records travel as Arrow tables (`RECORD_SCHEMA`): the input key and a sequence number (so the
driver can regroup and deduplicate whatever order or retries Ray produces), the raw media, and
a rejection `reason`/`message` that the first failing stage sets and later stages respect.
Each read task emits, after an input's records, one end-of-input sentinel row (``end=True``,
``seq`` = number of records, ``reason`` set if the input could not be read to its end).

Decoding (JPEG → resized uint8 pixels, FLAC → mono float32 at the codec rate) runs in the read
tasks, on CPUs, through `PREPARERS`: the codec actors (possibly on GPUs) then only run the
model. The decode parameters come from the tokenizer the driver loaded (its resolution, sample
rate, ...), and the actor calls the tokenizer's own batched entry point on them, so the codes
are exactly those of `tokenizer.encode` on the raw bytes. A tokenizer kind without a preparer
gets the raw bytes and does everything in the actor. Each stage replaces its media column by
``<modality>_codes`` (list<int32>, storage layout), so only compact codes reach the driver.

Trade-offs: rows of all kinds pass through every stage (a text row is a no-op in the image
stage) instead of splitting the stream per kind; that keeps one ordered stream per input, which
is what makes regrouping and resume simple, for the price of some pass-through serialization.
Decoded pixels are larger than JPEG bytes (a 256 px image is 192 KiB), which costs object-store
traffic but keeps the GPU actors from waiting on image decoding.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from trimodal.dataset.schema import KIND_MODALITIES, list_column
from trimodal.errors import SampleError

RECORD_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("seq", pa.int64()),
        ("end", pa.bool_()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("text", pa.large_string()),
        ("image", pa.large_binary()),
        ("audio", pa.large_binary()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)
CHUNK_BYTES = 32 * 1024 * 1024  # also cut a read block at this much raw media

# What a missing field of each kind is called in quarantine counts.
MISSING_REASON = {
    ("text", "text"): "empty_text",
    ("image_text", "text"): "missing_caption",
    ("audio_text", "text"): "missing_transcript",
    ("image_text", "image"): "missing_image",
    ("audio_text", "audio"): "missing_audio",
}


def sample_name(rec_id: str | None, origin: str | None) -> str:
    return f"{rec_id} ({origin})"


# ----------------------------------------------------------------------------- reading


def _records_table(rows: list[dict]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in RECORD_SCHEMA.names}
    try:
        return pa.Table.from_pydict(cols, schema=RECORD_SCHEMA)
    except (pa.ArrowInvalid, UnicodeEncodeError):
        # A reader handed over a str with lone surrogates (undecodable bytes): reject just it.
        for r in rows:
            t = r.get("text")
            if isinstance(t, str):
                try:
                    t.encode("utf-8")
                except UnicodeEncodeError:
                    r["text"] = None
                    r["reason"] = r.get("reason") or "invalid_utf8"
                    r["message"] = (
                        r.get("message") or f"{sample_name(r.get('id'), r.get('origin'))}: text is not valid UTF-8"
                    )
        cols = {name: [r.get(name) for r in rows] for name in RECORD_SCHEMA.names}
        return pa.Table.from_pydict(cols, schema=RECORD_SCHEMA)


def read_inputs(batch: pa.Table, sources: dict, chunk_rows: int, only: str | None = None) -> Iterator[pa.Table]:
    """Ray Data UDF: rows (key, source, uri[, origins]) → record blocks + one sentinel per input.

    `only` keeps just that raw modality (retokenizing). An `origins` list (retokenizing) keeps
    only the records found at those origins, in that order; origins the input no longer holds
    become `origin_not_found` rejections, so every wanted sample is accounted for."""
    from trimodal.pipeline.readers import read_input
    from trimodal.pipeline.sources import SourceConfig

    for item in batch.to_pylist():
        key, name, uri = item["key"], item["source"], item["uri"]
        src = sources[name]
        if isinstance(src, dict):
            src = SourceConfig(**src)
        wanted = item.get("origins")
        rows: list[dict] = []
        size = seq = 0
        reason = message = None
        try:
            records = read_input(src, uri)
            if wanted is not None:
                records = _by_origin(records, wanted, name)
            for rec in records:
                row = {
                    "key": key,
                    "seq": seq,
                    "end": False,
                    "id": rec.get("id"),
                    "source": rec.get("source") or name,
                    "origin": rec.get("origin"),
                    "reason": rec.get("error_reason"),
                    "message": rec.get("error_message"),
                }
                for m in ("text", "image", "audio"):
                    if only is None or m == only:
                        v = rec.get(m)
                        row[m] = v
                        if isinstance(v, (bytes, bytearray)):
                            size += len(v)
                if row["reason"] is not None and row["message"] is None:
                    row["message"] = f"{sample_name(row['id'], row['origin'])}: rejected by the reader"
                rows.append(row)
                seq += 1
                if len(rows) >= chunk_rows or size >= CHUNK_BYTES:
                    yield _records_table(rows)
                    rows, size = [], 0
        except Exception as e:  # the input (not one record) failed: report it, keep the job going
            reason = "input_error"
            message = str(e) if uri in str(e) else f"{uri}: {type(e).__name__}: {e}"
        rows.append(
            {"key": key, "seq": seq, "end": True, "source": name, "origin": uri, "reason": reason, "message": message}
        )
        yield _records_table(rows)


def _by_origin(records, wanted: list, source: str) -> Iterator[dict]:
    """The records at `wanted` origins (a list of {id, origin}), streamed in input order; the
    input is read only as far as the last wanted record. Wanted origins it no longer holds are
    yielded last as `origin_not_found` rejections."""
    want = {w["origin"]: w for w in wanted}
    seen: set = set()
    for rec in records:
        o = rec.get("origin")
        if o not in want or o in seen:
            continue
        seen.add(o)
        w = want[o]
        if rec.get("id") != w["id"]:
            yield {
                "id": w["id"],
                "source": source,
                "origin": o,
                "error_reason": "origin_mismatch",
                "error_message": f"{sample_name(w['id'], o)}: the record there now has id "
                f"{rec.get('id')!r}; the input changed since the dataset was made",
            }
        else:
            yield rec
        if len(seen) == len(want):
            return
    for w in wanted:
        if w["origin"] not in seen:
            yield {
                "id": w["id"],
                "source": source,
                "origin": w["origin"],
                "error_reason": "origin_not_found",
                "error_message": f"{sample_name(w['id'], w['origin'])}: the input no longer holds this record",
            }


# ----------------------------------------------------------------------------- decoding


def _image_params(tok) -> dict:
    return {
        "size": int(tok.image_size),
        "max_pixels": int(tok.max_pixels),
        "min_side": int(tok.min_side),
        "resample": tok.resample,
        "jpeg_draft": bool(tok.jpeg_draft),
    }


def _image_prepare(item: bytes, name: str, p: dict, limits: dict) -> bytes:
    from trimodal.tokenizers import media

    px = media.prepare_image(
        item,
        p["size"],
        name,
        max_pixels=p["max_pixels"],
        min_side=p["min_side"],
        resample=p["resample"],
        jpeg_draft=p["jpeg_draft"],
    )
    return np.ascontiguousarray(px, dtype=np.uint8).tobytes()


def _image_encode(tok, prepared: list[bytes], p: dict) -> list[np.ndarray]:
    s = p["size"]
    pixels = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(s, s, 3) for b in prepared])
    return list(tok.encode_pixels(pixels))


def _audio_params(tok) -> dict:
    return {"rate": int(tok.sample_rate), "max_seconds": tok.max_seconds}


def _audio_prepare(item: bytes, name: str, p: dict, limits: dict) -> bytes:
    from trimodal.tokenizers import media

    wav, rate = media.load_audio(item, name)
    limit = limits.get("max_audio_seconds")
    if limit and wav.shape[-1] > limit * rate:
        raise SampleError(
            "audio_too_long", f"{name}: {wav.shape[-1] / rate:.2f} s exceeds limits.max_audio_seconds={limit}"
        )
    mono = media.prepare_audio((wav, rate), p["rate"], name, p["max_seconds"])
    return np.ascontiguousarray(mono, dtype=np.float32).tobytes()


def _audio_encode(tok, prepared: list[bytes], p: dict) -> list[np.ndarray]:
    return list(tok.encode_waveforms([np.frombuffer(b, dtype=np.float32) for b in prepared]))


# tokenizer kind -> (params from a loaded tokenizer, prepare one raw item on a CPU task,
# encode a list of prepared items in the actor). Kinds not listed are encoded from raw bytes.
PREPARERS: dict[str, tuple[Callable, Callable, Callable]] = {
    "vqmodel": (_image_params, _image_prepare, _image_encode),
    "dac": (_audio_params, _audio_prepare, _audio_encode),
}


def prepare_params(kind: str, tok) -> dict | None:
    """What the decode tasks need to know about a loaded tokenizer (None: no CPU decode)."""
    entry = PREPARERS.get(kind)
    return entry[0](tok) if entry else None


def decode_media(batch: pa.Table, stages: dict, kinds: dict, limits: dict) -> pa.Table:
    """Ray Data UDF (CPU tasks, fused with the read): for each modality in `stages`
    ({modality: {kind, params}}), raw bytes → prepared bytes, or a rejection."""
    reasons = batch.column("reason").to_pylist()
    messages = batch.column("message").to_pylist()
    ends = batch.column("end").to_pylist()
    sources = batch.column("source").to_pylist()
    ids = batch.column("id").to_pylist()
    origins = batch.column("origin").to_pylist()
    for m, st in stages.items():
        prepare = PREPARERS[st["kind"]][1]
        media = batch.column(m).to_pylist()
        out: list = [None] * batch.num_rows
        for i, item in enumerate(media):
            if ends[i] or reasons[i] is not None or m not in KIND_MODALITIES.get(kinds.get(sources[i], ""), (m,)):
                continue
            name = sample_name(ids[i], origins[i])
            if item is None:
                reasons[i] = MISSING_REASON.get((kinds.get(sources[i], ""), m), f"missing_{m}")
                messages[i] = f"{name}: no {m} in the record"
                continue
            try:
                out[i] = prepare(item, name, st["params"], limits)
            except SampleError as e:
                reasons[i], messages[i] = e.reason, str(e)
            except Exception as e:  # a decoder bug on odd data must not end the job
                reasons[i], messages[i] = f"corrupt_{m}", f"{name}: {type(e).__name__}: {e}"
        idx = batch.schema.get_field_index(m)
        batch = batch.set_column(idx, m, pa.array(out, pa.large_binary()))
    batch = batch.set_column(batch.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
    return batch.set_column(batch.schema.get_field_index("message"), "message", pa.array(messages, pa.string()))


# ----------------------------------------------------------------------------- encoding


class EncodeStage:
    """Ray Data actor: one tokenizer, loaded once in __init__, applied to one modality.

    `prepared` is True when the decode tasks already turned the media into the codec's input
    (see PREPARERS); then only the batched model call runs here."""

    def __init__(
        self,
        modality: str,
        kind: str,
        path: str,
        options: dict,
        kinds: dict,
        prepared: dict | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        faults: dict | None = None,
    ):
        from trimodal.tokenizers.base import load_tokenizer

        if threads and modality != "text":
            import torch

            torch.set_num_threads(int(threads))
        self.modality = modality
        self.kinds = kinds  # source name -> source kind
        self.tok = load_tokenizer(kind, path, **(options or {}))
        self.encode_prepared = PREPARERS[kind][2] if prepared is not None else None
        self.params = prepared
        self.batch_size = batch_size or (1 << 30)  # rows per encode call
        self.faults = faults or {}
        self.calls = 0

    def _maybe_die(self) -> None:
        # Fault injection for tests: SIGKILL this actor's process once (a flag file makes it
        # once across the restart Ray does), to check that retries neither lose nor duplicate.
        f = self.faults.get("kill_actor")
        if f and f.get("modality") == self.modality and self.calls > int(f.get("after_calls", 0)):
            try:
                fd = os.open(f["flag"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from trimodal.tokenizers.base import to_storage

        self.calls += 1
        self._maybe_die()
        m = self.modality
        n = batch.num_rows
        reasons = batch.column("reason").to_pylist()
        messages = batch.column("message").to_pylist()
        ends = batch.column("end").to_pylist()
        sources = batch.column("source").to_pylist()
        ids = batch.column("id").to_pylist()
        origins = batch.column("origin").to_pylist()
        media = batch.column(m).to_pylist()
        todo = []
        for i in range(n):
            if ends[i] or reasons[i] is not None:
                continue
            kind = self.kinds.get(sources[i], "")
            if m not in KIND_MODALITIES.get(kind, (m,)):
                continue
            if media[i] is None:
                reasons[i] = MISSING_REASON.get((kind, m), f"missing_{m}")
                messages[i] = f"{sample_name(ids[i], origins[i])}: no {m} in the record"
                continue
            todo.append(i)
        codes: list = [None] * n
        for s in range(0, len(todo), self.batch_size):
            part = todo[s : s + self.batch_size]
            names = [sample_name(ids[i], origins[i]) for i in part]
            results = self._encode([media[i] for i in part], names)
            for i, r in zip(part, results):
                if isinstance(r, SampleError):
                    reasons[i], messages[i] = r.reason, str(r)
                else:
                    codes[i] = to_storage(m, r)
        batch = batch.drop_columns([m])
        batch = batch.set_column(batch.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
        batch = batch.set_column(batch.schema.get_field_index("message"), "message", pa.array(messages, pa.string()))
        return batch.append_column(f"{m}_codes", list_column(codes))

    def _encode(self, items: list, names: list[str]) -> list:
        if self.encode_prepared is not None:
            # Items were validated and decoded by the CPU tasks: a failure here is the codec's,
            # not the data's, and must fail loudly (Ray retries, then the job stops).
            return self.encode_prepared(self.tok, items, self.params)
        try:
            return list(self.tok.encode_each(items, names=names))
        except SampleError:
            raise
        except Exception as e:
            # Not a data problem the tokenizer recognised: isolate item by item so one odd sample
            # cannot fail the whole job, and keep the exception type in the quarantine message.
            out = []
            for item, name in zip(items, names):
                try:
                    out.append(self.tok.encode_each([item], names=[name])[0])
                except Exception as e1:
                    out.append(SampleError(f"{self.modality}_encode_failed", f"{name}: {type(e1).__name__}: {e1}"))
            if all(isinstance(o, SampleError) for o in out) and len(out) > 1:
                raise e  # every item fails the same way: a broken tokenizer, not bad data
            return out
