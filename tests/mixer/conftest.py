"""Small tokenized datasets for the mixer tests, built with the pipeline's own writer.

Synthetic fingerprints stand in for real tokenizers (the mixer only reads their identity
fields and sizes), so no codec is needed. Code values are random within each codebook.
"""

from __future__ import annotations

import numpy as np
import pytest

from trimodal.dataset.dataset import build_dataset

FPS = {
    "text": {
        "kind": "sentencepiece",
        "name": "t",
        "modality": "text",
        "codebook_size": 100,
        "levels": 1,
        "weights_sha256": "a",
    },
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "modality": "image",
        "codebook_size": 64,
        "levels": 1,
        "code_grid": [4, 4],
        "image_size": 32,
        "weights_sha256": "b",
    },
    "audio": {
        "kind": "dac",
        "name": "a",
        "modality": "audio",
        "codebook_size": 32,
        "levels": 2,
        "sample_rate": 16000,
        "frame_rate": 62.5,
        "weights_sha256": "c",
    },
}


def text_rows(n, lo=1, hi=300, seed=0, source="web"):
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"{source}/{i}",
            "source": source,
            "text": rng.integers(0, 100, rng.integers(lo, hi + 1)).astype(np.int32),
            "image": None,
            "audio": None,
            "origin": f"raw://{source}/{i}",
        }
        for i in range(n)
    ]


def image_rows(n, grid=16, lo=1, hi=30, seed=1, source="img"):
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"{source}/{i}",
            "source": source,
            "text": rng.integers(0, 100, rng.integers(lo, hi + 1)).astype(np.int32),
            "image": rng.integers(0, 64, grid).astype(np.int32),
            "audio": None,
            "origin": f"raw://{source}/{i}",
        }
        for i in range(n)
    ]


def audio_rows(n, lo=1, hi=40, frames=(5, 40), seed=2, source="speech"):
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"{source}/{i}",
            "source": source,
            "text": rng.integers(0, 100, rng.integers(lo, hi + 1)).astype(np.int32),
            "image": None,
            "audio": rng.integers(0, 32, 2 * rng.integers(*frames)).astype(np.int32),
            "origin": f"raw://{source}/{i}",
        }
        for i in range(n)
    ]


def build(path, rows, fps=("text",), shard_rows=1000):
    build_dataset(str(path), rows, {m: FPS[m] for m in fps}, shard_rows=shard_rows)
    return str(path)


@pytest.fixture(scope="session")
def mix_data(tmp_path_factory):
    """Three sources: text (3000 docs, shards of 2500 rows = several record batches), image-text
    (600 pairs of 16 image codes) and audio-text (500 pairs, 2 levels)."""
    root = tmp_path_factory.mktemp("mixdata")
    return {
        "text": build(root / "text", text_rows(3000), shard_rows=2500),
        "image": build(root / "image", image_rows(600), fps=("text", "image"), shard_rows=250),
        "audio": build(root / "audio", audio_rows(500), fps=("text", "audio"), shard_rows=500),
    }


def mix_cfg(data, shares=None, seq_len=128, global_batch=8, **kw):
    shares = shares or {"text": 0.5, "image": 0.3, "audio": 0.2}
    srcs = [{"name": n, "dataset": data[n], "share": s} for n, s in shares.items()]
    extra_src = kw.pop("source_opts", {})
    for s in srcs:
        s.update(extra_src.get(s["name"], {}))
    return {"sources": srcs, "seq_len": seq_len, "global_batch": global_batch, "seed": kw.pop("seed", 7), **kw}


def lookup(reader, samples):
    """(shard, record batch, row in batch, [n, 4]: code counts and 1 if the sample passes the
    reader's `sources` filter) of sample indices."""
    shard, local, lens, keep = reader.lengths(samples)
    batch, row = np.empty_like(local), np.empty_like(local)
    for s in np.unique(shard).tolist():
        sel = shard == s
        batch[sel], row[sel] = reader.data.locate(reader.data.file(s), local[sel])
    flag = np.ones((len(shard), 1), np.int32) if keep is None else keep.astype(np.int32)[:, None]
    return shard, batch, row, np.hstack([lens, flag])


def next_global(mixer):
    """The next whole global batch [global_batch, seq_len] of a mixer, whatever its rank: a
    one-rank mixer of the same mix, at the same position."""
    from trimodal.mixer import Mixer

    whole = Mixer(mixer.cfg)
    whole.load_state_dict(mixer.state_dict())
    return next(whole)
