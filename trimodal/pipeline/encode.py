"""Per-record work of the tokenize and retokenize jobs, shared by the input tasks (worker.py)
and the codec actors (codec_pool.py): reading an input into record dicts, preparing media for a
codec on CPUs, and encoding a list of items with a tokenizer while isolating bad ones.

Decoding (JPEG → resized uint8 pixels, FLAC → mono float32 at the codec rate) runs in the input
tasks, on CPUs, through `PREPARERS`: the codec actors (possibly on GPUs) then only run the
model. The decode parameters come from the tokenizer the driver loaded (its resolution, sample
rate, ...), and the actor calls the tokenizer's own batched entry point on them, so the codes
are exactly those of `tokenizer.encode` on the raw bytes. A tokenizer kind without a preparer
gets the raw bytes and does everything in the actor. Decoded pixels are larger than JPEG bytes
(a 256 px image is 192 KiB), which costs object-store traffic but keeps the GPU actors from
waiting on image decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from trimodal.dataset.schema import MODALITIES
from trimodal.errors import SampleError

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


def _valid_text(row: dict) -> None:
    """A reader may hand over a str with lone surrogates (undecodable bytes): reject just it."""
    t = row.get("text")
    if isinstance(t, str):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            row["text"] = None
            row["reason"] = row.get("reason") or "invalid_utf8"
            row["message"] = (
                row.get("message") or f"{sample_name(row.get('id'), row.get('origin'))}: text is not valid UTF-8"
            )


def read_records(src, name: str, uri: str, only: str | None = None, wanted: list | None = None) -> Iterator[dict]:
    """One input's records, in input order, as dicts: id, source, origin, the raw media of
    each modality (only `only`'s when set), and `reason`/`message` when the reader rejected
    the record. `wanted` (retokenizing: a list of {id, origin}) keeps only the records at those
    origins; origins the input no longer holds become `origin_not_found` rejections, so every
    wanted sample is accounted for. An input that breaks part way raises (InputError or the
    reader's own error) after the records read before the damage."""
    from trimodal.pipeline.readers import read_input

    records = read_input(src, uri)
    if wanted is not None:
        records = _by_origin(records, wanted, name)
    for rec in records:
        row = {
            "id": rec.get("id"),
            "source": rec.get("source") or name,
            "origin": rec.get("origin"),
            "reason": rec.get("error_reason"),
            "message": rec.get("error_message"),
        }
        for m in MODALITIES:
            if only is None or m == only:
                row[m] = rec.get(m)
        if row["reason"] is not None and row["message"] is None:
            row["message"] = f"{sample_name(row['id'], row['origin'])}: rejected by the reader"
        _valid_text(row)
        yield row


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
    if limit is not None and wav.shape[-1] > limit * rate:
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


def prepare_item(kind: str, item, name: str, params: dict, limits: dict):
    """Raw media → what the codec actor's batched call takes (PREPARERS), or SampleError."""
    return PREPARERS[kind][1](item, name, params, limits)


def encode_items(tok, modality: str, items: list, names: list[str]) -> list:
    """Codes per item, or the item's SampleError in its place. A failure the tokenizer does not
    recognise as bad data is isolated item by item, so one odd sample cannot fail the input; if
    every item of a batch fails the same way, the tokenizer is broken and the error is raised."""
    try:
        return list(tok.encode_each(items, names=names))
    except SampleError:
        raise
    except Exception as e:
        out = []
        for item, name in zip(items, names):
            try:
                out.append(tok.encode_each([item], names=[name])[0])
            except Exception as e1:
                out.append(SampleError(f"{modality}_encode_failed", f"{name}: {type(e1).__name__}: {e1}"))
        if all(isinstance(o, SampleError) for o in out) and len(out) > 1:
            raise e
        return out
