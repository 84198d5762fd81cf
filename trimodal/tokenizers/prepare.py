"""One sample's way from raw media to codes, split where CPU work ends and the codec begins.

Both the tokenize job and the tokenization service encode through this module, so a sample gets
the same validation, the same rejection reason and the same codes wherever it is encoded:

    prepare_params(kind, tok)                      what the CPU side needs to know about a codec
    prepare_item(kind, raw, name, params, limits)  validate + decode one raw item → prepared bytes
                                                   (JPEG → resized uint8 pixels, FLAC → mono float32
                                                   at the codec rate), or raise SampleError
    encode_prepared(kind, tok, prepared, params)   the batched codec call on prepared items
    encode_items(tok, modality, items, names)      kinds without a preparer (text): the
                                                   tokenizer's own `encode_each`, isolating items

The split lets the job decode media in CPU read tasks and run only the model in (GPU) actors,
and lets the service validate in its CPU ingress (a bad upload gets its 422 without a trip to a
GPU replica). Prepared items are plain bytes so that they travel through Ray cheaply and
nothing is pickled from user data. The trade-off: prepared pixels are larger than the JPEG they
came from (a 256 px image is 192 KiB), traffic that buys codec replicas that never wait on
decoding. `limits` is the tokenize job's `limits:` block as a dict; only `max_audio_seconds` is
checked here (longer clips are rejected as `audio_too_long` before resampling), the others are
tokenizer options (`TokenizerSpec.load_options`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trimodal.errors import SampleError


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
    limit = (limits or {}).get("max_audio_seconds")
    if limit is not None and wav.shape[-1] > limit * rate:
        raise SampleError(
            "audio_too_long", f"{name}: {wav.shape[-1] / rate:.2f} s exceeds limits.max_audio_seconds={limit}"
        )
    mono = media.prepare_audio((wav, rate), p["rate"], name, p["max_seconds"])
    return np.ascontiguousarray(mono, dtype=np.float32).tobytes()


def _audio_encode(tok, prepared: list[bytes], p: dict) -> list[np.ndarray]:
    return list(tok.encode_waveforms([np.frombuffer(b, dtype=np.float32) for b in prepared]))


# tokenizer kind -> (params from a loaded tokenizer, prepare one raw item on a CPU, encode a
# list of prepared items in the codec's process). Kinds not listed are encoded from raw items.
PREPARERS: dict[str, tuple[Callable, Callable, Callable]] = {
    "vqmodel": (_image_params, _image_prepare, _image_encode),
    "dac": (_audio_params, _audio_prepare, _audio_encode),
}


def prepare_params(kind: str, tok) -> dict | None:
    """What the CPU side needs to know about a loaded tokenizer (None: the kind has no preparer,
    its raw items go to `encode_items`). Plain JSON-safe data."""
    entry = PREPARERS.get(kind)
    return entry[0](tok) if entry else None


def prepare_item(kind: str, item: Any, name: str, params: dict, limits: dict | None) -> bytes:
    """Validate and decode one raw item for codec `kind` → prepared bytes. Raises SampleError
    with the reason the tokenize job quarantines it under."""
    return PREPARERS[kind][1](item, name, params, limits or {})


def encode_prepared(kind: str, tok, prepared: list[bytes], params: dict) -> list[np.ndarray]:
    """The batched codec call on items from `prepare_item` → one code array per item (the
    tokenizer's shape). The items were validated already: a failure here is the codec's."""
    return PREPARERS[kind][2](tok, prepared, params)


def encode_items(tok, modality: str, items: list, names: list[str]) -> list:
    """Raw items → code arrays and `SampleError`s in order, through the tokenizer's own
    `encode_each`. An exception the tokenizer does not recognise as bad data is isolated item by
    item (quarantined as `<modality>_encode_failed` with its type), so one odd sample cannot
    fail a batch; if every item of a batch fails that way, the tokenizer is broken and the
    exception is raised."""
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
