"""What the service does with one request item, apart from Ray: parse, prepare, encode, decode.

The ingress (CPU) side parses the JSON item, base64-decodes media and runs the tokenize job's
own per-sample preparation (`trimodal.tokenizers.prepare.prepare_item`: the same validation,
the same rejection reasons, the same decoded pixels / waveform); the codec replica runs
`encode_prepared` / `encode_items` on a batch of them, exactly as the job's encode actors do, and
returns codes in the shards' storage layout (`to_storage`). Decoding is the reverse: codes (or
unified ids) are checked here (type, range, grid, length) before they reach a replica, the
replica returns pixels / waveforms / text, and the ingress writes PNG / WAV bytes.

Nothing from a request is unpickled: JSON in, base64 media, numpy arrays built from ints.
Errors are `ServiceError`s carrying the HTTP status and a reason: 422 with the quarantine
reason the tokenize job would record (`errors.QUARANTINE_REASONS`), 400 for a
malformed request, 413 for one over a size limit.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from trimodal.dataset.schema import MODALITIES
from trimodal.errors import SampleError
from trimodal.tokenizers.base import from_storage, to_storage
from trimodal.tokenizers.media import media_file_bytes

MEDIA_TYPES = {"text": "text/plain; charset=utf-8", "image": "image/png", "audio": "audio/wav"}


class ServiceError(Exception):
    """An answer other than 200: HTTP `status`, a stable `reason`, a message, extra headers."""

    def __init__(self, status: int, reason: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"reason": self.reason, "message": self.message}}


def bad_request(message: str, reason: str = "bad_request") -> ServiceError:
    return ServiceError(400, reason, message)


def rejected(e: SampleError) -> ServiceError:
    """A sample the tokenize job would quarantine: 422 with the job's reason."""
    return ServiceError(422, e.reason, str(e))


# ----------------------------------------------------------------------------- requests


def check_modality(obj: dict, served: dict, default: str | None, where: str) -> str:
    m = obj.get("modality", default)
    if not isinstance(m, str) or not m:
        raise bad_request(f"{where}modality: required, one of {', '.join(served)}")
    if m not in MODALITIES:
        raise bad_request(f"{where}modality: {m!r} is not one of {', '.join(MODALITIES)}", "unknown_modality")
    if m not in served:
        raise bad_request(
            f"{where}modality: this service has no {m} tokenizer (it serves {', '.join(served)})", "unknown_modality"
        )
    return m


def request_items(body: Any, max_items: int) -> tuple[list[dict], bool]:
    """A parsed JSON body → (items, is_list). A single item is a one-item list."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if "items" not in body:
        return [body], False
    items = body["items"]
    if not isinstance(items, list) or not items:
        raise bad_request("items: must be a non-empty list of objects")
    if len(items) > max_items:
        raise ServiceError(413, "too_many_items", f"items: {len(items)} items exceeds serve.max_items={max_items}")
    default = body.get("modality")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise bad_request(f"items[{i}]: must be an object")
        out.append(it if default is None or "modality" in it else dict(it, modality=default))
    return out, True


def raw_media(obj: dict, modality: str, where: str) -> str | bytes:
    """The item's `data`: text as is, image / audio from base64 (strict alphabet)."""
    data = obj.get("data")
    if not isinstance(data, str):
        raise bad_request(f"{where}data: required, a string (text, or base64 of the file's bytes)")
    if modality == "text":
        return data
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"{where}data: not valid base64 ({e})") from None


def prepare_request(modality: str, kind: str, raw: str | bytes, name: str, params: dict | None, limits: dict):
    """Ingress side of encoding: the tokenize job's preparation for codecs that have one (raw
    text goes to the replica as is, where the tokenizer validates it). Raises ServiceError 422."""
    from trimodal.tokenizers.prepare import prepare_item

    if params is None:
        return raw
    try:
        return prepare_item(kind, raw, name, params, limits)
    except SampleError as e:
        raise rejected(e) from None
    except Exception as e:  # a decoder failing on odd data: the job quarantines it the same way
        raise ServiceError(422, f"corrupt_{modality}", f"{name}: {type(e).__name__}: {e}") from None


def code_shape(modality: str, codes: np.ndarray) -> list[int]:
    return [int(n) for n in np.asarray(codes).shape]


# ----------------------------------------------------------------------------- replica side


def encode_batch(tok, modality: str, kind: str, params: dict | None, items: list[tuple]) -> list[tuple]:
    """Codec replica: [(prepared or raw item, name)] → [("ok", storage codes, shape) or
    ("error", reason, message)], through the tokenize job's encode functions."""
    from trimodal.tokenizers.prepare import encode_items, encode_prepared

    data = [it[0] for it in items]
    names = [it[1] for it in items]
    if params is not None:
        results = encode_prepared(kind, tok, data, params)
    else:
        results = encode_items(tok, modality, data, names)
    out = []
    for r in results:
        if isinstance(r, SampleError):
            out.append(("error", r.reason, str(r)))
        else:
            out.append(("ok", to_storage(modality, r), code_shape(modality, r)))
    return out


def decode_batch(tok, modality: str, fingerprint: dict, flats: list[np.ndarray]) -> list:
    """Codec replica: storage-layout codes → text / uint8 (H, W, 3) pixels / (float32 wave, rate)."""
    codes = [from_storage(modality, f, fingerprint) for f in flats]
    media = tok.decode(codes)
    if modality == "image":
        return [np.asarray(img.convert("RGB"), dtype=np.uint8) for img in media]
    if modality == "audio":
        return [(np.asarray(w, dtype=np.float32).reshape(-1), int(r)) for w, r in media]
    return list(media)


# ----------------------------------------------------------------------------- decoding


def parse_codes(obj: dict, modality: str, fp: dict, vocab, max_audio_seconds: float | None, where: str) -> np.ndarray:
    """A decode item's `codes` (storage layout, flat; or the tokenizer's shape, nested) or `ids`
    (unified vocabulary) → flat int32 storage-layout codes, checked against the fingerprint."""
    has_codes, has_ids = "codes" in obj, "ids" in obj
    if has_codes == has_ids:
        raise bad_request(f"{where}codes/ids: give exactly one of them")
    key = "codes" if has_codes else "ids"
    value = obj[key]
    if not isinstance(value, list):
        raise bad_request(f"{where}{key}: must be a list of integers")
    try:
        arr = np.asarray(value) if value else np.zeros(0, np.int64)
    except (ValueError, OverflowError):  # ragged nesting
        arr = None
    if arr is None or arr.dtype.kind not in "iu":  # floats, bools, strings, objects
        raise bad_request(f"{where}{key}: must be integers (a flat list, or nested in the code shape)", "bad_codes")
    if has_ids:
        if arr.ndim != 1:
            raise bad_request(f"{where}ids: must be a flat list", "bad_codes")
        try:
            arr = vocab.ids_to_codes(modality, arr)
        except ValueError as e:
            raise bad_request(f"{where}ids: {e}", "bad_codes") from None
    levels = int(fp.get("levels", 1))
    size = int(fp["codebook_size"])
    if arr.ndim > 1:  # the tokenizer's shape: image (h, w), audio (levels, frames)
        want_rank = {"image": 2, "audio": 2}.get(modality, 1)
        if arr.ndim != want_rank or (modality == "audio" and arr.shape[0] != levels):
            raise bad_request(f"{where}codes: shape {list(arr.shape)} is not this {modality} codec's", "bad_codes")
        arr = to_storage(modality, arr)
    arr = arr.reshape(-1)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= size):
        raise bad_request(f"{where}{key}: codes must be in [0, {size}) for this {modality} codec", "bad_codes")
    if modality == "image":
        h, w = fp["code_grid"]
        if arr.size != h * w:
            raise bad_request(f"{where}{key}: {arr.size} codes, the {h}x{w} grid needs {h * w}", "bad_codes")
    elif modality == "audio":
        if arr.size % levels:
            raise bad_request(f"{where}{key}: {arr.size} codes is not a multiple of {levels} levels", "bad_codes")
        frames = arr.size // levels
        if max_audio_seconds:
            cap = math.ceil(max_audio_seconds * float(fp["frame_rate"]))
            if frames > cap:
                raise ServiceError(
                    413,
                    "too_long",
                    f"{where}{key}: {frames} frames decode to more than limits.max_audio_seconds={max_audio_seconds}",
                )
    elif arr.size == 0:
        raise bad_request(f"{where}{key}: no codes", "bad_codes")
    return arr.astype(np.int32)


def media_payload(modality: str, media: Any) -> dict:
    """The `data` / `media_type` of a decode response."""
    blob = media_file_bytes(modality, media)
    data = blob.decode("utf-8") if modality == "text" else base64.b64encode(blob).decode("ascii")
    return {"modality": modality, "media_type": MEDIA_TYPES[modality], "data": data}
