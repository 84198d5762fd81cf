"""What the ingress does with one request item, on either side of the codec call.

Encoding: the JSON item is checked, its media base64-decoded and run through the tokenize job's
own per-sample preparation (`trimodal.tokenizers.prepare.prepare_item`: the same validation,
rejection reasons and decoded pixels / waveform), so a bad upload gets its 422 here without a
trip to a codec replica. Decoding: codes or unified ids are checked (type, range, grid, length)
before they reach a replica, and the media it returns become the response's file bytes.

Nothing from a request is unpickled: JSON in, base64 media, numpy arrays built from ints.
Refusals are `ServiceError`s, their statuses in service/errors.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from trimodal.dataset.schema import MODALITIES
from trimodal.errors import SampleError
from trimodal.service.errors import ServiceError, bad_request, rejected
from trimodal.tokenizers.base import to_storage
from trimodal.tokenizers.media import MEDIA_TYPES, media_file_bytes

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


def declared_length(header: str | None) -> int | None:
    """The Content-Length a client declared, or None when absent or not a plain decimal number
    (the body is then counted as it streams in). `str.isdigit` alone also accepts "²", which
    `int` refuses: that header used to answer 500."""
    if header is None or not (header.isascii() and header.isdigit()):
        return None
    return int(header)


def parse_body(body: bytes) -> Any:
    """The request body as JSON, or 400 `malformed_json`: not UTF-8, not JSON, or nested deeper
    than the parser's recursion limit (json raises RecursionError there, which is the client's
    doing, not a bug of ours)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ServiceError("malformed_json", f"the request body is not valid JSON ({e})") from None
    except RecursionError:
        raise ServiceError("malformed_json", "the request body is nested too deeply to parse") from None


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
        raise ServiceError("too_many_items", f"items: {len(items)} items exceeds serve.max_items={max_items}")
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
        raise ServiceError(f"corrupt_{modality}", f"{name}: {type(e).__name__}: {e}") from None


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
