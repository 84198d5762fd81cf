"""Where a training worker's batches come from: its own mixer rank stream (co-located, no
network hop), or a synthetic stream for isolating model throughput and for overfit checks.

Both give the same interface: iterate → dict of np arrays [global_batch / world_size, seq_len]
(tokens, modality, segment_ids, positions), rank r holding rows [r·n, (r+1)·n) of the global
batch; `.vocab`; `.seq_len`; `state_dict()` / `load_state_dict()` holding a global position,
valid for any world size. Registry: `STREAMS[kind]`, chosen by ``mix.kind`` in the train config
(default "mixer"; the key is removed before the mixer sees it); the config is typed and checked
by `trimodal.model.config.stream_config` when the train config is loaded.

The trainer opens the stream with the LOGICAL batch as the global batch and cuts each rank's
share into micro-batches itself, so the data a step sees depends on neither the number of
workers nor the physical batch: a run can resume on another world size, or with another
accumulation factor, and see the very same samples.

`Prefetcher` pulls batches on a background thread so the next batch is ready when the step
ends (the mixer is Python; a GPU step releases the GIL while it waits on the device). The
trade-off is one thread and `depth` batches of memory; it checkpoints the state of the last
batch CONSUMED, not fetched, so resuming never skips the batches that sat in its queue.
"""

from __future__ import annotations

import copy
import dataclasses
import queue
import threading
from collections.abc import Callable

import numpy as np

from trimodal.config import from_dict
from trimodal.dataset.schema import MODALITIES
from trimodal.errors import ConfigError
from trimodal.mixer import layout
from trimodal.mixer.config import MixConfig
from trimodal.mixer.layout import AUDIO, IMAGE, TEXT
from trimodal.model.config import SyntheticStreamConfig, stream_config
from trimodal.tokenizers.vocab import MODALITY_IDS, Vocabulary


def _mixer_stream(mix: MixConfig, rank: int, world_size: int, global_batch: int):
    from trimodal.mixer import rank_stream

    # the logical batch: one optimizer step of all ranks (stream_config refused a mix's own)
    mix = dataclasses.replace(mix, global_batch=global_batch)
    return rank_stream(mix, rank=rank, world_size=world_size)


class SyntheticStream:
    """A fixed pool of `pool` random packed rows, served in order and repeated.

    Documents are text (<bos> t.. <eos>) and, when the vocabulary has images/audio,
    t2i / t2s pairs laid out like the mixer's. Position p of the global stream is pool row
    p mod pool, so the stream is elastic and resumable like the mixer's.
    """

    def __init__(self, spec: SyntheticStreamConfig | dict, rank: int, world_size: int, global_batch: int):
        if not isinstance(spec, SyntheticStreamConfig):
            spec = from_dict(SyntheticStreamConfig, spec, where="mix")
        self.vocab = Vocabulary.from_fingerprints(spec.fingerprints)
        self.seq_len = spec.seq_len
        self.rank, self.world_size, self.global_batch = rank, world_size, global_batch
        if global_batch % world_size:
            raise ConfigError("mix: global batch not divisible by the number of workers")
        rng = np.random.default_rng(spec.seed)
        doc_len = spec.doc_len or max(8, self.seq_len // 2)
        rows = [self._row(rng, doc_len) for _ in range(spec.pool)]
        self.pool = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        self.position = 0

    def _doc(self, rng, doc_len):
        """One random document, laid out as the mixer lays it out (mixer/layout.py)."""
        v = self.vocab
        media = [m for m in MODALITIES[1:] if v.has(m)]
        modality = (["text"] + media)[rng.integers(len(media) + 1)]
        kind = {"text": TEXT, "image": IMAGE, "audio": AUDIO}[modality]
        lo, hi = v.range("text")
        text = rng.integers(lo, hi, doc_len if kind == TEXT else max(2, doc_len // 4))
        codes = {"text": (list(text), MODALITY_IDS["text"])}
        if kind != TEXT:
            n = doc_len - len(text)
            if kind == IMAGE:
                lo, hi = v.range("image")
                media_codes = rng.integers(lo, hi, n)
            else:
                levels = v.levels("audio")
                n = max(levels, n - n % levels)
                media_codes = v.codes_to_ids(
                    "audio", rng.integers(0, v.range("audio", 0)[1] - v.range("audio", 0)[0], n)
                )
            codes["media"] = (list(media_codes), MODALITY_IDS[modality])
        toks, mods = [], []
        for part in layout.parts(kind, reverse=False):
            if part in codes:
                ids, tag = codes[part]
                toks += ids
                mods += [tag] * len(ids)
            else:
                toks.append(v.special(layout.special_token(kind, part)))
                mods.append(MODALITY_IDS["special"])
        return toks, mods

    def _row(self, rng, doc_len):
        L = self.seq_len
        out = {
            "tokens": np.zeros(L, np.int32),
            "modality": np.zeros(L, np.int8),
            "segment_ids": np.zeros(L, np.int32),
            "positions": np.zeros(L, np.int32),
        }
        i, seg = 0, 1
        while i < L:
            toks, mods = self._doc(rng, doc_len)
            n = min(len(toks), L - i)
            if n < 4:
                break
            out["tokens"][i : i + n] = toks[:n]
            out["modality"][i : i + n] = mods[:n]
            out["segment_ids"][i : i + n] = seg
            out["positions"][i : i + n] = np.arange(n)
            i, seg = i + n, seg + 1
        out["tokens"][out["segment_ids"] == 0] = self.vocab.pad_id
        return out

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        per = self.global_batch // self.world_size
        idx = (self.position + self.rank * per + np.arange(per)) % len(self.pool["tokens"])
        self.position += self.global_batch
        return {k: v[idx] for k, v in self.pool.items()}

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, d: dict) -> None:
        self.position = int(d["position"])


STREAMS: dict[str, Callable] = {
    "mixer": _mixer_stream,
    "synthetic": lambda mix, rank, world_size, global_batch: SyntheticStream(mix, rank, world_size, global_batch),
}


def open_stream(mix: MixConfig | SyntheticStreamConfig | dict | str, rank: int, world_size: int, global_batch: int):
    """The rank's stream for a train config's mix (typed, a mapping or the path of a mix YAML)."""
    if not isinstance(mix, (MixConfig, SyntheticStreamConfig)):
        mix = stream_config(mix, "mix")
    kind = "synthetic" if isinstance(mix, SyntheticStreamConfig) else "mixer"
    return STREAMS[kind](mix, rank, world_size, global_batch)


_END = object()


class Prefetcher:
    """Iterate a stream `depth` batches ahead on a daemon thread (depth 0: no thread).

    Each queued item carries the stream's state right after it was produced, so `state_dict()`
    describes exactly the batches handed out so far. An exception in the stream is re-raised
    in the consumer at the batch where it happened. `transform` (e.g. pinning host memory)
    runs on the thread too."""

    def __init__(self, stream, depth: int = 2, transform: Callable | None = None):
        self.stream, self.depth, self.transform = stream, depth, transform
        self._state = copy.deepcopy(stream.state_dict())
        self._q: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _produce(self):
        try:
            for batch in self.stream:
                if self.transform is not None:
                    batch = self.transform(batch)
                item = (batch, copy.deepcopy(self.stream.state_dict()), None)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._q.put((_END, None, None))
        except BaseException as e:  # handed to the consumer, which raises it
            self._q.put((None, None, e))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.depth <= 0:
            batch = next(self.stream)
            self._state = copy.deepcopy(self.stream.state_dict())
            return self.transform(batch) if self.transform is not None else batch
        if self._thread is None:
            self._q = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._produce, name="trimodal-prefetch", daemon=True)
            self._thread.start()
        batch, state, err = self._q.get()
        if err is not None:
            raise err
        if batch is _END:
            raise StopIteration
        self._state = state
        return batch

    def state_dict(self) -> dict:
        return self._state

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def planned_padding(stream, steps: int = 8) -> float:
    """Share of padding among the positions of the stream's next `steps` global batches: planned
    by a twin of the mixer at the same position (no tokens copied), or read off the synthetic
    stream's pool."""
    if isinstance(stream, SyntheticStream):
        return float((stream.pool["segment_ids"] == 0).mean())
    from trimodal.mixer import Mixer

    twin = Mixer(stream.cfg, 0, 1)
    twin.load_state_dict(stream.state_dict())
    before = twin.stats()
    twin.advance(steps)
    after = twin.stats()
    positions = after["positions"] - before["positions"]
    return 1.0 - (after["tokens"] - before["tokens"]) / positions if positions else 0.0
