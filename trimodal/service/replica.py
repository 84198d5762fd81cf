"""The codec deployment: one modality's tokenizer, loaded once per replica, encoding and decoding
batches of what the ingress sends.

A replica runs only what the tokenize job's codec actors run (`encode_prepared`, or the
tokenizer's own `encode_items` for text), so the service's codes are the job's, byte for byte,
for the same fingerprint and device. Concurrent calls share codec calls through the `Batcher`
(dynamic batching, one codec call at a time; service/batcher.py says why not `serve.batch`).
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
from ray import serve

from trimodal.errors import SampleError
from trimodal.service.batcher import Batcher
from trimodal.tokenizers.base import from_storage, to_storage
from trimodal.tokenizers.placement import CodecLoad


@serve.deployment
class CodecServer:
    """One modality's tokenizer, loaded once per replica; batched encode and decode."""

    def __init__(
        self, codec: CodecLoad, params: dict | None, fingerprint: dict, max_batch_size: int, batch_wait_s: float
    ):
        self.modality, self.kind, self.params, self.fingerprint = codec.modality, codec.kind, params, fingerprint
        self.tok = codec.load()
        self._encoder = Batcher(self._encode_batch, max_batch_size, batch_wait_s)
        self._decoder = Batcher(self._decode_batch, max_batch_size, batch_wait_s)

    async def encode_many(self, items: list) -> list:
        """[(prepared or raw item, name)] from one ingress call → one result per item; calls
        from several ingress batches share codec batches."""
        return await asyncio.gather(*(self._encoder.submit(it) for it in items))

    async def decode_many(self, flats: list) -> list:
        return await asyncio.gather(*(self._decoder.submit(f) for f in flats))

    def pid(self) -> int:
        return os.getpid()

    async def _encode_batch(self, items: list) -> list:
        if self.modality == "text":  # microseconds: a thread hop would cost more than the call
            return encode_batch(self.tok, self.modality, self.kind, self.params, items)
        # In a thread: the codec releases the GIL, and the replica keeps taking requests for
        # the next batch meanwhile.
        return await asyncio.to_thread(encode_batch, self.tok, self.modality, self.kind, self.params, items)

    async def _decode_batch(self, flats: list) -> list:
        return await asyncio.to_thread(decode_batch, self.tok, self.modality, self.fingerprint, flats)


def encode_batch(tok, modality: str, kind: str, params: dict | None, items: list[tuple]) -> list[tuple]:
    """[(prepared or raw item, name)] → [("ok", storage codes, shape) or ("error", reason,
    message)], through the tokenize job's encode functions."""
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
            out.append(("ok", to_storage(modality, r), [int(n) for n in np.asarray(r).shape]))
    return out


def decode_batch(tok, modality: str, fingerprint: dict, flats: list[np.ndarray]) -> list:
    """Storage-layout codes → text / uint8 (H, W, 3) pixels / (float32 wave, rate)."""
    codes = [from_storage(modality, f, fingerprint) for f in flats]
    media = tok.decode(codes)
    if modality == "image":
        return [np.asarray(img.convert("RGB"), dtype=np.uint8) for img in media]
    if modality == "audio":
        return [(np.asarray(w, dtype=np.float32).reshape(-1), int(r)) for w, r in media]
    return list(media)
