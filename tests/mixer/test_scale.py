"""The mixer at cluster scale: planning from the length index only, each rank reading only the
rows it renders (locally and on S3), memory bounded by the caches whatever the dataset size and
the number of sources on it, a lazily read manifest, and a resume that refuses what would
break exactly-once."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from tests.mixer.conftest import build, image_rows, mix_cfg, text_rows
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import SHARD_TABLE_SCHEMA, Manifest, ShardTable
from trimodal.errors import ConfigError, IntegrityError
from trimodal.mixer import Mixer
from trimodal.mixer.scheduler import Scheduler, normalize

KEYS = ("tokens", "modality", "segment_ids", "positions")


def take(m, n):
    return [next(m) for _ in range(n)]


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in KEYS)


def _many(root):
    return {
        "text": build(f"{root}/text", text_rows(7200, lo=20, hi=400, seed=11), shard_rows=600),
        "image": build(f"{root}/image", image_rows(1800, grid=40, seed=12), fps=("text", "image"), shard_rows=300),
    }


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    """Text in 12 shards of 600 rows, and image-text pairs in 6 shards: a rank's rows touch
    several shards and record batches."""
    return _many(tmp_path_factory.mktemp("scale"))


def test_planning_reads_only_the_length_index(many_shards):
    m = Mixer(mix_cfg(many_shards, shares={"text": 0.7, "image": 0.3}, global_batch=16))
    assert m.advance(40) == 40
    io = m.io_stats()
    assert all(s["opens"] == 0 and s["bytes_read"] == 0 for s in io.values())  # no shard touched
    assert sum(s["index_loads"] for s in io.values()) <= 12 + 6


@pytest.mark.parametrize("where", ["local", "s3"])
def test_each_rank_reads_only_what_it_renders(many_shards, where, request):
    data = many_shards if where == "local" else _many(f"s3://{request.getfixturevalue('s3_bucket')}")
    cfg = mix_cfg(data, shares={"text": 0.7, "image": 0.3}, global_batch=64, seq_len=256)
    world, check, steps = 64, 8, 250
    whole = take(Mixer(cfg), check)
    for rank in (0, 63):
        m = Mixer(cfg, rank=rank, world_size=world)
        got = take(m, check)
        for step in range(check):
            for k in KEYS:
                assert np.array_equal(got[step][k], whole[step][k][rank : rank + 1])
        take(m, steps - check)
        io = list(m.io_stats().values())
        read = sum(s["bytes_read"] for s in io)
        rendered = sum(s["code_bytes"] for s in io)
        # the rest: 8-byte list offsets per document and column, a footer per shard and a
        # layout per record batch touched (18 shards, 24 batches: read once, then cached)
        assert rendered > 0 and read <= 1.5 * rendered, (rank, read, rendered)
        if where == "s3":  # per global batch: offsets, then codes, per document and column; opening reads
            requests = sum(s["requests"] for s in io)
            assert requests <= steps * 8 + 18 * 3 + 24, requests
    # planned by every rank, read by one: a rank of 64 reads about 1/64 of the codes
    one = Mixer(cfg)
    take(one, steps // 10)
    per_step_all = sum(s["code_bytes"] for s in one.io_stats().values()) / (steps // 10)
    assert rendered / steps < per_step_all / 20


def test_s3_read_ahead_keeps_the_stream_and_its_state(many_shards, s3_bucket):
    remote = build(f"s3://{s3_bucket}/image", image_rows(1800, grid=40, seed=12), fps=("text", "image"), shard_rows=300)
    data = {"text": many_shards["text"], "image": remote}
    cfg = mix_cfg(data, shares={"text": 0.5, "image": 0.5}, global_batch=8)
    ahead = Mixer(cfg, rank=1, world_size=2)
    assert ahead.read_ahead == 2
    plain = Mixer(cfg, rank=1, world_size=2, read_ahead=0)
    for _ in range(7):
        a, b = next(ahead), next(plain)
        assert same(a, b)
        assert json.dumps(ahead.state_dict()) == json.dumps(plain.state_dict())
    resumed = Mixer(cfg, rank=1, world_size=2)
    resumed.load_state_dict(ahead.state_dict())
    assert same(next(resumed), next(plain))


@pytest.mark.parametrize("path_", ["per_shard", "piece_by_piece", "ranges"])
def test_index_and_shard_that_disagree_are_named(tmp_path, monkeypatch, path_):
    from trimodal.mixer import mapped

    monkeypatch.setattr(mapped, "PIECES_PER_SHARD", 10**6 if path_ == "piece_by_piece" else 0)
    path = build(tmp_path / "d", text_rows(300, lo=5, hi=30), shard_rows=300)
    ds = Dataset.open(path)
    entry = ds.shards[0]
    index = tmp_path / "d" / entry["index"]["path"]
    t = pa.ipc.open_file(pa.py_buffer(index.read_bytes())).read_all()
    text = t.column("text").to_numpy().copy()
    text[:] += 1  # every length off by one, same file size (verify "size" passes it)
    t = t.set_column(0, "text", pa.array(text, pa.int32()))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    data = sink.getvalue().to_pybytes()
    assert len(data) == entry["index"]["bytes"]
    index.write_bytes(data)
    m = Mixer({"sources": [{"name": "t", "dataset": path, "share": 1}], "seq_len": 64, "global_batch": 2})
    if path_ == "ranges":
        m.fetcher.mapped = dict.fromkeys(m.fetcher.mapped, False)
    with pytest.raises(IntegrityError, match="part-00000.*length index"):
        next(m)


def test_sources_on_one_dataset_share_one_reader_and_its_bounds(tmp_path):
    rows = text_rows(8000, lo=300, hi=600, seed=3)
    path = build(tmp_path / "one", rows, shard_rows=1000)  # 8 shards of ~1.8 MB
    cfg = {
        "sources": [{"name": f"s{i}", "dataset": path, "share": 1 + i} for i in range(8)],
        "seq_len": 512,
        "global_batch": 16,
        "seed": 1,
        "cache_files": 8,
        "cache_batches": 4,
    }
    m = Mixer(cfg)
    assert len(m.shared) == 1
    data = next(iter(m.shared.values())).data
    # 14 MB of shards, more than 4 record batches' worth (~7 MB): read by pread, not mapped
    assert data.pread and data.budget < 8 << 20
    for _ in range(30):
        next(m)
        assert len(data.open_shards) <= 8 and len(data.cached_batches) <= 4
        assert len(data.index.loaded) <= 8
    assert _resident_kb(os.path.join(path, "shards")) == 0
    # within the budget the same dataset is mapped, and a map can hold no more than its file
    cfg["cache_batches"] = 16
    m = Mixer(cfg)
    data = next(iter(m.shared.values())).data
    assert not data.pread
    for _ in range(30):
        next(m)
    assert 0 < _resident_kb(os.path.join(path, "shards")) <= data.budget // 1024


def _resident_kb(prefix: str) -> int:
    """Resident kB of this process's mappings of files under `prefix` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                inside = len(head) >= 6 and head[5].startswith(prefix)
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total


def test_shuffle_window_is_checked_against_the_open_shards(many_shards):
    cfg = mix_cfg(many_shards, shares={"text": 1, "image": 1}, shuffle_window=16, cache_files=8)
    with pytest.raises(ConfigError, match="shuffle_window.*cache_files"):
        Mixer(cfg)
    shared = {
        "sources": [{"name": f"s{i}", "dataset": many_shards["text"], "share": 1} for i in range(8)],
        "seq_len": 128,
        "global_batch": 8,
        "shuffle_window": 4,
        "cache_files": 32,
    }
    with pytest.raises(ConfigError, match=r"8 source\(s\).*raise cache_files to 64"):
        Mixer(shared)
    shared["cache_files"] = 64
    Mixer(shared)


@pytest.mark.parametrize(
    "change",
    [
        {"shuffle_window": 2},
        {"global_batch": 16},
        {"source_opts": {"text": {"pack": False}}},
        {"source_opts": {"image": {"max_epochs": 3}}},
        {"source_opts": {"text": {"dataset_sources": ["web"]}}},
        {"dataset": True},
    ],
    ids=["shuffle_window", "global_batch", "pack", "max_epochs", "dataset_sources", "dataset"],
)
def test_resume_refuses_a_changed_order(many_shards, mix_data, change):
    cfg = mix_cfg(many_shards, shares={"text": 0.5, "image": 0.5})
    m = Mixer(cfg)
    take(m, 5)
    state = json.loads(json.dumps(m.state_dict()))
    if change.get("dataset"):
        other = dict(many_shards, text=mix_data["text"])
        new, key = mix_cfg(other, shares={"text": 0.5, "image": 0.5}), "sources.text.dataset"
    else:
        new = mix_cfg(many_shards, shares={"text": 0.5, "image": 0.5}, **change)
        key = next(iter(change)) if "source_opts" not in change else None
        if key is None:
            src, opts = next(iter(change["source_opts"].items()))
            key = f"sources.{src}.{next(iter(opts))}"
    with pytest.raises((ConfigError, IntegrityError), match=key.replace(".", r"\.")):
        Mixer(new).load_state_dict(state)


def test_resume_accepts_what_keeps_exactly_once(many_shards, mix_data):
    cfg = mix_cfg(many_shards, shares={"text": 0.5, "image": 0.5})
    m = Mixer(cfg, with_docs=True)
    before = take(m, 6)
    state = m.state_dict()
    changed = mix_cfg(
        {**many_shards, "audio": mix_data["audio"]},
        shares={"text": 0.2, "image": 0.5, "audio": 0.3},  # new shares and a new source
        schedule=[{"step": 8, "shares": {"image": 0.1}}],
        source_opts={"image": {"reverse_prob": 0.5}},
        cache_files=16,
        verify="sha256",
    )
    x = Mixer(changed, with_docs=True)
    x.load_state_dict(state)
    after = take(x, 20)
    seen = {}
    for b in before + after:
        for row in b["docs"]:
            for src, ep, g, a, z in row:
                if a == 0:
                    assert (src, ep, g) not in seen  # nothing repeated
                    seen[src, ep, g] = 1
    assert any(src == "audio" for src, _, _ in seen)


def test_a_format_1_state_still_loads(many_shards):
    cfg = mix_cfg(many_shards, shares={"text": 0.5, "image": 0.5})
    m = Mixer(cfg)
    take(m, 3)
    st = m.state_dict()
    old = {
        "format": 1,
        "seed": st["seed"],
        "seq_len": st["seq_len"],
        "share_unit": st["share_unit"],
        "step": st["step"],
        "pad_rows": st["pad_rows"],
        "ended": st["ended"],
        "scheduler": {
            n: [t0 + w * st["scheduler"]["amount"], g] for n, (t0, g, w) in st["scheduler"]["sources"].items()
        },
        "sources": {n: {k: v for k, v in s.items() if k != "order"} for n, s in st["sources"].items()},
    }
    x = Mixer(cfg)
    x.load_state_dict(old)
    y = Mixer(cfg)
    y.load_state_dict(st)
    for _ in range(5):
        a, b = next(x), next(y)
        assert np.array_equal(a["tokens"][:, :8], b["tokens"][:, :8])  # same documents open the rows


def test_mixer_starts_on_a_large_manifest_without_reading_its_entries(tmp_path, monkeypatch):
    """100k shards (no shard files): the header, the shard table's `rows` column, nothing else."""
    n = 100_000
    sha = pa.array([bytes([i % 256]) * 32 for i in range(n)], pa.binary(32))
    table = pa.table(
        {
            "path": pa.array([f"shards/p-{i:07d}.arrow" for i in range(n)]),
            "rows": pa.array(np.full(n, 1000, np.int64)),
            "bytes": pa.array(np.full(n, 4_000_000, np.int64)),
            "sha256": sha,
            "tokens_text": pa.array(np.full(n, 300_000, np.int64)),
            "tokens_image": pa.array(np.zeros(n, np.int64)),
            "tokens_audio": pa.array(np.zeros(n, np.int64)),
            "by_source": pa.array(['{"src":{"audio":0,"image":0,"rows":1000,"text":300000}}'] * n),
            "index_bytes": pa.array(np.full(n, 13_000, np.int64)),
            "index_sha256": sha,
        },
        schema=SHARD_TABLE_SCHEMA,
    )
    from tests.mixer.conftest import FPS

    Manifest(fingerprints={"text": FPS["text"]}, shards=ShardTable(table)).save(str(tmp_path / "big"))

    def no(*a, **k):
        raise AssertionError("the whole shard table was converted")

    monkeypatch.setattr(ShardTable, "_columns", no)
    monkeypatch.setattr(Manifest, "compute_totals", no)
    m = Mixer(
        {"sources": [{"name": "t", "dataset": str(tmp_path / "big"), "share": 1}], "seq_len": 64, "global_batch": 2}
    )
    assert m.streams["t"].n == n * 1000
    assert m.state_dict()["sources"]["t"]["samples"] == n * 1000


def test_scheduler_many_sources_resume_and_bound():
    rng = np.random.default_rng(5)
    names = [f"s{i}" for i in range(64)]
    w = normalize({n: float(rng.uniform(0.05, 1)) for n in names}, set(names))
    w2 = normalize({n: float(rng.uniform(0.05, 1)) for n in names[:40]}, set(names))
    a = Scheduler(names, 100)
    picks = []
    for k in range(3000):
        weights = w if k < 1500 else w2
        a.set_weights(weights)
        i = a.pick()
        a.commit_index(i, int(rng.integers(20, 101)))
        picks.append(i)
        if k == 1499 or k == 2999:
            tgt = a.target
            assert max(abs(a.G[j] - tgt[n]) for j, n in enumerate(names)) <= 100
    # a state saved mid-way continues with the very same choices
    b = Scheduler(names, 100)
    rng = np.random.default_rng(5)
    _ = [float(rng.uniform(0.05, 1)) for _ in range(64 + 40)]
    replay = []
    for k in range(3000):
        if k == 1000:
            saved = json.loads(json.dumps(b.state()))
            b = Scheduler(names, 100)
            b.load(saved)
        b.set_weights(w if k < 1500 else w2)
        i = b.pick()
        b.commit_index(i, int(rng.integers(20, 101)))
        replay.append(i)
    assert replay == picks


def test_s3_batches_a_rank_reads_densely_are_fetched_whole(tmp_path, s3_bucket):
    """W = 1 over a small dataset: once a rank has asked a quarter of a record batch by ranges,
    the batch comes whole in one GET and later documents cost no request; same stream."""
    rows = text_rows(3000, lo=20, hi=200, seed=4)
    local = build(tmp_path / "t", rows, shard_rows=1500)
    remote = build(f"s3://{s3_bucket}/t", rows, shard_rows=1500)
    cfg = lambda p: {"sources": [{"name": "t", "dataset": p, "share": 1}], "seq_len": 256, "global_batch": 16}  # noqa: E731
    a, b = Mixer(cfg(local)), Mixer(cfg(remote), read_ahead=0)
    per_step = []
    for _ in range(40):
        assert same(next(a), next(b))
        per_step.append(sum(s["requests"] for s in b.io_stats().values()))
    first, last = per_step[9] - per_step[0], per_step[39] - per_step[30]
    assert last < first / 4, per_step
