"""The shard reader: random access by global index, irregular record batches, S3 ranged reads."""

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from tests.mixer.conftest import FPS, audio_rows, build, lookup, mix_cfg, text_rows
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.shards import SCHEMA, rows_to_table, table_tokens
from trimodal.errors import IntegrityError
from trimodal.mixer import Mixer
from trimodal.mixer.shard_reader import ShardReader


def write_irregular(path, rows, chunk):
    """A dataset whose shard holds record batches of `chunk` rows (another writer's layout)."""
    table = rows_to_table(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, SCHEMA) as w:
        for b in table.to_batches(max_chunksize=chunk):
            w.write_batch(b)
    data = sink.getvalue().to_pybytes()
    (path / "shards").mkdir(parents=True)
    (path / "shards" / "part-00000.arrow").write_bytes(data)
    entry = {
        "path": "shards/part-00000.arrow",
        "rows": len(rows),
        "tokens": table_tokens(table),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "by_source": {},
    }
    Manifest(fingerprints={"text": FPS["text"], "audio": FPS["audio"]}, shards=[entry]).save(str(path))
    return str(path)


def expected(rows, g):
    r = rows[g]
    return [
        r["text"].tolist(),
        None if r["image"] is None else r["image"].tolist(),
        None if r["audio"] is None else r["audio"].tolist(),
    ]


@pytest.mark.parametrize("chunk", [1024, 333])
def test_random_access_matches_the_rows(tmp_path, chunk):
    rows = audio_rows(2500, frames=(1, 4)) + text_rows(2500, hi=20, seed=5)
    if chunk == 1024:  # shards of 1024 + 1024 + 152 rows, and 600
        path = build(tmp_path / "d", rows, fps=("text", "audio"), shard_rows=2200)
    else:
        path = write_irregular(tmp_path / "d", rows, chunk)
    reader = ShardReader(Dataset.open(path, verify="sha256"), cache_batches=4, cache_files=1)
    batches = 7 if chunk == 1024 else -(-len(rows) // chunk)
    g = np.random.default_rng(0).permutation(len(rows))
    for lo in range(0, len(g), 2):  # windows of 2 samples, a cache of 4 batches: evictions
        s, b, r, lens = lookup(reader, g[lo : lo + 2])
        for k, gi in enumerate(g[lo : lo + 2].tolist()):
            want = expected(rows, gi)
            assert lens[k].tolist() == [-1 if w is None else len(w) for w in want] + [1]
            got = reader.codes(int(s[k]), int(b[k]), int(r[k]))
            assert [None if x is None else x.tolist() for x in got] == want
            assert reader.sample_id(int(s[k]), int(b[k]), int(r[k])) == rows[gi]["id"]
        # bounded: open files, and no cached batch of a closed file (it would pin its mapping)
        open_shards = reader.data.open_shards
        assert len(open_shards) <= 1 and all(key[0] in open_shards for key in reader.data.cached_batches)
    assert reader.fetches > batches  # batches were evicted and fetched again, correctly


def test_truncated_shard_is_named(tmp_path):
    path = build(tmp_path / "d", text_rows(50))
    shard = tmp_path / "d" / "shards" / "part-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="part-00000"):
        next(Mixer({"sources": [{"name": "t", "dataset": path, "share": 1}], "seq_len": 32, "global_batch": 2}))


def test_s3_source_streams_like_the_local_copy(tmp_path, s3_bucket, mix_data):
    rows = audio_rows(300)
    local = build(tmp_path / "a", rows, fps=("text", "audio"), shard_rows=120)
    remote = build(f"s3://{s3_bucket}/audio", rows, fps=("text", "audio"), shard_rows=120)
    a = Mixer(mix_cfg({"text": mix_data["text"], "audio": local}, shares={"text": 0.5, "audio": 0.5}))
    b = Mixer(mix_cfg({"text": mix_data["text"], "audio": remote}, shares={"text": 0.5, "audio": 0.5}))
    for _ in range(15):
        x, y = next(a), next(b)
        assert np.array_equal(x["tokens"], y["tokens"]) and np.array_equal(x["positions"], y["positions"])
