"""Per-record work of the tokenize and retokenize jobs, shared by the input tasks (worker.py)
and the codec actors (codec_pool.py): reading an input into record dicts, preparing media for a
codec on CPUs, and encoding a list of items with a tokenizer while isolating bad ones.

Decoding (JPEG → resized uint8 pixels, FLAC → mono float32 at the codec rate) runs in the input
tasks, on CPUs, through trimodal/tokenizers/prepare.py (one implementation, shared with the
tokenization service): the codec actors (possibly on GPUs) then only run the model. The decode parameters come from the tokenizer the driver loaded (its resolution, sample
rate, ...), and the actor calls the tokenizer's own batched entry point on them, so the codes
are exactly those of `tokenizer.encode` on the raw bytes. A tokenizer kind without a preparer
gets the raw bytes and does everything in the actor. Decoded pixels are larger than JPEG bytes
(a 256 px image is 192 KiB), which costs object-store traffic but keeps the GPU actors from
waiting on image decoding.
"""

from __future__ import annotations

from collections.abc import Iterator

from trimodal.dataset.schema import MODALITIES

# The per-sample preparation (decode + validate on CPUs, the batched codec call, item isolation)
# lives in trimodal/tokenizers/prepare.py, one implementation shared with the tokenization
# service; re-exported here for the input tasks and codec actors.
from trimodal.tokenizers.prepare import PREPARERS, encode_items, prepare_item, prepare_params  # noqa: F401

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
