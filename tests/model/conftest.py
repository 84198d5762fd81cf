"""Shared helpers for the model tests: a small synthetic vocabulary and hand-made batches."""

import numpy as np
import pytest

from trimodal.dataset.dataset import build_dataset
from trimodal.tokenizers.vocab import MODALITY_IDS, Vocabulary

# Fingerprints only need the fields that lay out the vocabulary.
FPS = {
    "text": {"kind": "sentencepiece", "name": "t", "codebook_size": 40, "levels": 1, "weights_sha256": "t"},
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "codebook_size": 16,
        "levels": 1,
        "code_grid": [2, 2],
        "weights_sha256": "i",
    },
    "audio": {"kind": "dac", "name": "a", "codebook_size": 8, "levels": 2, "frame_rate": 4.0, "weights_sha256": "a"},
}


def text_image_dataset(path, n=24, seed=0, pairs: bool = True) -> str:
    """A small dataset on the text and image fingerprints above, built without Ray: documents of
    12 text codes, and with `pairs` every odd sample a pair of 5 text and 4 image codes."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pair = pairs and i % 2 == 1
        rows.append(
            {
                "id": f"d/{i}",
                "source": "d",
                "text": rng.integers(0, 40, 5 if pair else 12).astype(np.int32),
                "image": rng.integers(0, 16, 4).astype(np.int32) if pair else None,
                "audio": None,
                "origin": "",
            }
        )
    build_dataset(str(path), rows, {m: FPS[m] for m in ("text", "image")})
    return str(path)


@pytest.fixture
def vocab():
    return Vocabulary.from_fingerprints(FPS)


def pack(vocab, docs, L):
    """Pack documents [(tokens, modalities)] into one row of length L, with segment ids and
    positions reset per document; the rest is padding."""
    row = {
        "tokens": np.full(L, vocab.pad_id, np.int64),
        "modality": np.zeros(L, np.int64),
        "segment_ids": np.zeros(L, np.int64),
        "positions": np.zeros(L, np.int64),
    }
    i = 0
    for s, (toks, mods) in enumerate(docs, start=1):
        n = len(toks)
        row["tokens"][i : i + n] = toks
        row["modality"][i : i + n] = mods
        row["segment_ids"][i : i + n] = s
        row["positions"][i : i + n] = np.arange(n)
        i += n
    assert i <= L
    return row


def text_doc(vocab, ids):
    S, T = MODALITY_IDS["special"], MODALITY_IDS["text"]
    lo = vocab.range("text")[0]
    toks = [vocab.special("<bos>")] + [lo + int(i) for i in ids] + [vocab.special("<eos>")]
    return toks, [S] + [T] * len(ids) + [S]


def t2i_doc(vocab, caption, codes):
    S, T, I = MODALITY_IDS["special"], MODALITY_IDS["text"], MODALITY_IDS["image"]
    tl, il = vocab.range("text")[0], vocab.range("image")[0]
    toks = (
        [vocab.special("<bos>"), vocab.special("<t2i>")]
        + [tl + int(c) for c in caption]
        + [vocab.special("<boi>")]
        + [il + int(c) for c in codes]
        + [vocab.special("<eoi>"), vocab.special("<eos>")]
    )
    mods = [S, S] + [T] * len(caption) + [S] + [I] * len(codes) + [S, S]
    return toks, mods


def stack(rows):
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """These tensors are tiny: one intra-op thread is faster, and on a shared 2-core machine
    a second spinning thread only slows every test down."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
