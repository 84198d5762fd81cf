"""The Mixer contract (docs/design.md): deterministic, elastic, ratio-exact, every sample once per
epoch, schedules without repeats or skips, honest utilization, refused vocabularies."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mixer.conftest import FPS, audio_rows, build, image_rows, lookup, mix_cfg, next_global, text_rows
from trimodal.errors import ConfigError, IntegrityError
from trimodal.mixer import Mixer
from trimodal.tokenizers.vocab import Vocabulary

KEYS = ("tokens", "modality", "segment_ids", "positions")


def take(mixer, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(mixer))
        except StopIteration:
            break
    return out


def check_batch(b, vocab):
    """Layout invariants of a rendered batch."""
    tok, mod, seg, pos = (b[k] for k in KEYS)
    assert np.array_equal(vocab.modality_of(tok), mod)
    assert ((seg == 0) == (tok == vocab.pad_id)).all()
    for i in range(len(tok)):
        real = np.nonzero(seg[i])[0]
        if len(real):  # documents first, padding after
            assert real[-1] == len(real) - 1
            s = seg[i][: len(real)]
            assert s[0] == 1 and (np.diff(s) >= 0).all() and (np.diff(s) <= 1).all()
            starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
            for a, z in zip(starts, np.r_[starts[1:], len(real)]):
                assert pos[i][a:z].tolist() == list(range(z - a))
        assert (pos[i][len(real) :] == 0).all()


def pieces(batches):
    """source -> list of (epoch, sample, start, stop) in stream order."""
    out = defaultdict(list)
    for b in batches:
        for row in b["docs"]:
            for src, ep, g, a, z in row:
                out[src].append((ep, g, a, z))
    return out


def test_batches_have_the_contracted_layout(mix_data):
    m = Mixer(mix_cfg(mix_data), with_docs=True)
    batches = take(m, 30)
    assert m.seq_len == 128 and set(batches[0]) == set(KEYS) | {"docs"}
    for b in batches:
        assert b["tokens"].shape == (8, 128) and b["tokens"].dtype == np.int32
        assert b["modality"].dtype == np.int8
        check_batch(b, m.vocab)
    # the three kinds of documents all occur, each opening with <bos>
    bos = m.vocab.special("<bos>")
    firsts = {int(b["tokens"][i, 1]) for b in batches for i in range(8) if b["tokens"][i, 0] == bos}
    assert m.vocab.special("<t2i>") in firsts and m.vocab.special("<t2s>") in firsts
    assert any(m.vocab.range("text")[0] <= t < m.vocab.range("text")[1] for t in firsts)


def test_deterministic_and_seeded(mix_data):
    a = take(Mixer(mix_cfg(mix_data)), 40)
    b = take(Mixer(mix_cfg(mix_data)), 40)
    c = take(Mixer(mix_cfg(mix_data, seed=8)), 40)
    for k in KEYS:
        assert np.array_equal(np.stack([x[k] for x in a]), np.stack([x[k] for x in b]))
    assert not np.array_equal(np.stack([x["tokens"] for x in a]), np.stack([x["tokens"] for x in c]))


@pytest.mark.parametrize("world", [2, 4, 8])
def test_rank_batches_union_is_the_global_batch(mix_data, world):
    whole = take(Mixer(mix_cfg(mix_data)), 12)
    ranks = [take(Mixer(mix_cfg(mix_data), rank=r, world_size=world), 12) for r in range(world)]
    for step in range(12):
        for k in KEYS:
            assert np.array_equal(np.concatenate([ranks[r][step][k] for r in range(world)]), whole[step][k])
    # next_global gives the same whole batch from any rank's mixer
    g = Mixer(mix_cfg(mix_data), rank=1, world_size=2)
    assert np.array_equal(next_global(g)["tokens"], whole[0]["tokens"])


def test_elastic_resume_on_another_world_size(mix_data):
    ref = take(Mixer(mix_cfg(mix_data)), 20)
    m = Mixer(mix_cfg(mix_data), rank=1, world_size=2)
    take(m, 9)
    state = json.loads(json.dumps(m.state_dict()))  # JSON-safe, and small
    assert len(json.dumps(state)) < 2000
    resumed = []
    for r in range(4):
        x = Mixer(mix_cfg(mix_data), rank=r, world_size=4)
        x.load_state_dict(state)
        resumed.append(take(x, 11))
    for step in range(11):
        got = np.concatenate([resumed[r][step]["tokens"] for r in range(4)])
        assert np.array_equal(got, ref[9 + step]["tokens"])


@pytest.mark.parametrize("pack_pairs", [False, True])
def test_every_sample_exactly_once_per_epoch(mix_data, pack_pairs):
    opts = {n: {"max_epochs": 2} for n in mix_data}
    opts["image"]["pack"] = opts["audio"]["pack"] = pack_pairs
    m = Mixer(mix_cfg(mix_data, source_opts=opts), with_docs=True)
    batches = list(m)
    assert m.ended
    st_ = m.stats()
    per = pieces(batches)
    for name, path in mix_data.items():
        n = st_["sources"][name]
        assert n["exhausted"] and n["epochs"] == 2
        assert sum(n["skipped"].values()) == 0
        lens = {}
        for ep, g, a, z in per[name]:
            lens.setdefault((ep, g), []).append((a, z))
        samples = m.streams[name].n
        for ep in (0, 1):
            seen = sorted(g for (e, g) in lens if e == ep)
            assert seen == list(range(samples))
        for (ep, g), spans in lens.items():  # split documents tile [0, len) in order
            assert spans[0][0] == 0 and all(p[1] == q[0] for p, q in zip(spans, spans[1:]))
        order0 = [g for ep, g, a, z in per[name] if ep == 0 and a == 0]
        order1 = [g for ep, g, a, z in per[name] if ep == 1 and a == 0]
        assert order0 != order1  # a new shuffle per epoch
    # the last batch was completed with all-padding rows, and nothing else was padding-only
    assert st_["pad_rows"] == sum(1 for b in batches for row in b["docs"] if not row)
    assert all(row for b in batches[:-1] for row in b["docs"])


def test_text_longer_than_a_row_is_split_and_pairs_never_cut(tmp_path):
    long_text = build(tmp_path / "long", text_rows(20, lo=300, hi=500))
    pairs = build(
        tmp_path / "pairs", image_rows(30, grid=40) + image_rows(10, grid=200, source="big"), fps=("text", "image")
    )
    cfg = {
        "sources": [
            {"name": "long", "dataset": long_text, "share": 1, "pack": False},
            {"name": "pairs", "dataset": pairs, "share": 1, "pack": True},
        ],
        "seq_len": 128,
        "global_batch": 4,
        "seed": 0,
    }
    m = Mixer(cfg, with_docs=True)
    batches = take(m, 40)
    for b in batches:
        check_batch(b, m.vocab)
        for i, row in enumerate(b["docs"]):
            if row and row[0][0] == "long":
                assert len(row) == 1  # padded source: one document (piece) per row
    per = pieces(batches)
    assert all(0 < z - a <= 128 for _, _, a, z in per["long"])  # every piece is non-empty and fits a row
    assert any(a > 0 for _, _, a, z in per["long"])  # continuations exist
    for _, g, a, z in per["pairs"]:  # pairs whole, from the start
        assert a == 0
    s = m.stats()["sources"]["pairs"]
    assert s["skipped"]["too_long"] > 0  # the 200-code images cannot fit 128 positions
    eid = {g for _, g, _, _ in per["pairs"]}
    assert not eid & set(range(30, 40))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    w=st.lists(st.integers(1, 20), min_size=3, max_size=3),
    seq_len=st.sampled_from([64, 128, 200]),
    unit=st.sampled_from(["tokens", "positions"]),
)
def test_every_prefix_within_one_sequence_of_the_target(mix_data, w, seq_len, unit):
    shares = dict(zip(["text", "image", "audio"], w))
    total_w = sum(w)
    m = Mixer(mix_cfg(mix_data, shares=shares, seq_len=seq_len, global_batch=1, share_unit=unit))
    for _ in range(250):
        m.advance(1)
        st_ = m.stats()["sources"]
        if unit == "tokens":
            got = {n: s["tokens"] for n, s in st_.items()}
        else:
            got = {n: s["rows"] * seq_len for n, s in st_.items()}
        total = sum(got.values())
        for n, g in got.items():
            assert abs(g - shares[n] / total_w * total) <= seq_len


@pytest.mark.parametrize("unit,pack", [("positions", None), ("tokens", True)])
def test_ten_thousand_sequences_of_2048_within_a_tenth_of_a_point(mix_data, unit, pack):
    opts = {n: {"pack": pack} for n in mix_data}  # None: the paper's layout (pairs padded)
    shares = {"text": 0.55, "image": 0.3, "audio": 0.15}
    m = Mixer(mix_cfg(mix_data, shares=shares, seq_len=2048, global_batch=100, share_unit=unit, source_opts=opts))
    assert m.advance(100) == 100
    st_ = m.stats()
    assert st_["rows"] == 10_000
    for n, s in st_["sources"].items():
        realized = s["tokens_share"] if unit == "tokens" else s["positions_share"]
        assert abs(realized - shares[n]) < 0.001, (n, realized)


def test_schedule_changes_shares_without_repeat_or_skip(mix_data):
    sched = [{"step": 20, "shares": {"text": 0.1, "image": 0.8}}, {"step": 45, "shares": {"audio": 0.0}}]
    plain = Mixer(mix_cfg(mix_data, global_batch=1), with_docs=True)
    ref = pieces(take(plain, 400))
    m = Mixer(mix_cfg(mix_data, global_batch=1, schedule=sched), with_docs=True)
    batches = take(m, 120)
    got = pieces(batches)
    for n in mix_data:  # each source's documents continue in its own order, whatever the shares
        assert got[n] == ref[n][: len(got[n])]
    # audio takes no row once its share is 0, and the new shares hold from step 20 on
    assert all(row[0][0] != "audio" for b in batches[45:] for row in b["docs"])
    st_ = m.stats()
    for n, s in st_["sources"].items():
        assert abs(s["tokens"] - s["expected"] * st_["tokens"]) <= 128 + 1e-6


def test_resume_with_changed_and_added_sources(mix_data):
    two = {"text": 0.5, "image": 0.5}
    first = Mixer(mix_cfg(mix_data, shares=two, global_batch=2), with_docs=True)
    before = take(first, 15)
    state = first.state_dict()
    # on resume: new shares, a new source, continuing the same per-source orders
    later = Mixer(mix_cfg(mix_data, shares={"text": 0.2, "image": 0.5, "audio": 0.3}, global_batch=2), with_docs=True)
    later.load_state_dict(state)
    after = take(later, 60)
    ref = pieces(take(Mixer(mix_cfg(mix_data, global_batch=2), with_docs=True), 300))
    got = pieces(before + after)
    for n in ("text", "image", "audio"):
        assert got[n] and got[n] == ref[n][: len(got[n])]
    # dropping a source keeps its position in the state, so bringing it back continues it
    drop = Mixer(mix_cfg(mix_data, shares={"text": 1.0}, global_batch=2))
    drop.load_state_dict(later.state_dict())
    take(drop, 3)
    assert drop.state_dict()["sources"]["audio"] == later.state_dict()["sources"]["audio"]


def test_sources_filtered_from_one_dataset(tmp_path):
    """One dataset holding two corpora (its `source` column), mixed as two sources."""
    rows = text_rows(700, source="web") + image_rows(300, source="img") + text_rows(50, source="other", seed=9)
    order = np.random.default_rng(0).permutation(len(rows))
    path = build(tmp_path / "both", [rows[i] for i in order], fps=("text", "image"), shard_rows=400)
    cfg = {
        "sources": [
            {"name": "t", "dataset": path, "share": 0.6, "dataset_sources": ["web"], "max_epochs": 1, "pack": None},
            {"name": "i", "dataset": path, "share": 0.4, "dataset_sources": ["img"], "max_epochs": 1, "pack": None},
        ],
        "seq_len": 128,
        "global_batch": 4,
        "seed": 0,
    }
    m = Mixer(cfg, with_docs=True)
    got = pieces(list(m))
    for name, corpus, n in (("t", "web", 700), ("i", "img", 300)):
        reader = m.streams[name].reader
        s, b, r, _ = lookup(reader, np.array(sorted({g for _, g, a, _ in got[name] if a == 0})))
        ids = [reader.sample_id(int(x), int(y), int(z)) for x, y, z in zip(s, b, r)]
        assert len(ids) == n and all(i.startswith(corpus + "/") for i in ids)
    st_ = m.stats()["sources"]
    assert st_["t"]["pack"] and not st_["i"]["pack"]  # pack: null decides from the corpora's own tokens
    cfg["sources"][1]["dataset_sources"] = ["imgs"]
    with pytest.raises(ConfigError, match="'img', 'other', 'web'"):
        Mixer(cfg)


def test_utilization_and_pad_fraction_match_the_batches(mix_data):
    paper = {n: {"pack": None} for n in mix_data}  # text packed, pairs padded
    m = Mixer(mix_cfg(mix_data, source_opts=paper), with_docs=True)
    batches = take(m, 50)
    st_ = m.stats()
    nonpad = defaultdict(int)
    for b in batches:
        for i, row in enumerate(b["docs"]):
            nonpad[row[0][0]] += int((b["segment_ids"][i] != 0).sum())
    positions = 50 * 8 * 128
    assert st_["positions"] == positions
    assert st_["tokens"] == sum(nonpad.values())
    assert st_["pad_fraction"] == pytest.approx(1 - sum(nonpad.values()) / positions)
    for n, s in st_["sources"].items():
        assert s["tokens"] == nonpad[n]
        assert s["utilization"] == pytest.approx(nonpad[n] / (s["rows"] * 128))
    assert st_["sources"]["text"]["pack"] and st_["sources"]["text"]["utilization"] == 1.0
    assert not st_["sources"]["image"]["pack"] and st_["sources"]["image"]["utilization"] < 0.5


def test_sources_with_different_tokenizers_are_refused(tmp_path, mix_data):
    other = dict(FPS["text"], codebook_size=200, weights_sha256="zz", name="t2")
    from trimodal.dataset.dataset import build_dataset

    build_dataset(str(tmp_path / "t2"), text_rows(10), {"text": other})
    cfg = mix_cfg(mix_data)
    cfg["sources"].append({"name": "web2", "dataset": str(tmp_path / "t2"), "share": 0.1})
    with pytest.raises(IntegrityError) as e:
        Mixer(cfg)
    msg = str(e.value)
    assert "'text'" in msg and "'web2'" in msg and "codebook_size" in msg and "weights_sha256" in msg
    # against a given vocabulary (a checkpoint's vocab.json) the source is named too
    Vocabulary.from_fingerprints({"text": other}).save(str(tmp_path / "vocab.json"))
    with pytest.raises(IntegrityError, match="source 'text'.*codebook_size"):
        Mixer(mix_cfg(mix_data, vocab=str(tmp_path / "vocab.json")))


def test_codes_outside_the_codebook_are_caught_and_named(tmp_path):
    rows = text_rows(5)
    rows[3]["text"] = np.array([1, 2, 150], np.int32)  # codebook is 100
    path = build(tmp_path / "bad", rows)
    m = Mixer(
        {
            "sources": [{"name": "bad", "dataset": path, "share": 1, "max_epochs": 1}],
            "seq_len": 64,
            "global_batch": 5,
            "seed": 0,
        }
    )
    with pytest.raises(IntegrityError, match="web/3"):
        list(m)


def test_state_from_another_mix_is_refused(mix_data):
    state = Mixer(mix_cfg(mix_data)).state_dict()
    with pytest.raises(ConfigError, match="seed"):
        Mixer(mix_cfg(mix_data, seed=1)).load_state_dict(state)
    with pytest.raises(ConfigError, match="seq_len"):
        Mixer(mix_cfg(mix_data, seq_len=64)).load_state_dict(state)
    with pytest.raises(ConfigError, match="global_batch"):
        Mixer(mix_cfg(mix_data, global_batch=6), world_size=4)
    with pytest.raises(ConfigError, match="share_unit"):
        mix_cfg_bad = mix_cfg(mix_data, share_unit="rows")
        Mixer(mix_cfg_bad)


def test_block_shuffle_reads_each_record_batch_whole(tmp_path):
    """shuffle_window: every sample still once per epoch, but a record batch is fetched about
    once per epoch instead of about once per sample (8 record batches, a cache of 4). Read by
    pread (a dataset beyond the cache's bytes), a global order fetches a record batch every
    few samples; read in place from maps (the dataset fits), each batch's layout is parsed
    once while its shard is open, whatever the order."""
    path = build(tmp_path / "short", text_rows(4096, lo=1, hi=20), shard_rows=512)
    cfg = {
        "sources": [{"name": "text", "dataset": path, "share": 1, "max_epochs": 1}],
        "seq_len": 256,
        "global_batch": 4,
        "seed": 3,
        "cache_batches": 4,
    }
    big = build(tmp_path / "big", text_rows(8192, lo=1, hi=20), shard_rows=512)
    m = Mixer({**cfg, "sources": [{"name": "text", "dataset": big, "share": 1}]}, with_docs=True)
    assert m.streams["text"].reader.data.pread
    take(m, 10)  # ~800 documents of 16 record batches in a global order: each fetched again and again
    assert m.streams["text"].reader.fetches > 4 * 16
    m = Mixer(cfg, with_docs=True)
    assert not m.streams["text"].reader.data.pread
    take(m, 10)
    assert m.streams["text"].reader.fetches <= 8  # maps: one layout per record batch
    cfg["shuffle_window"] = 2
    m = Mixer(cfg, with_docs=True)
    got = pieces(list(m))["text"]
    assert sorted(g for e, g, a, z in got if a == 0) == list(range(4096))
    assert m.streams["text"].reader.fetches <= 2 * 8
    a = Mixer(cfg, with_docs=True)  # resuming mid-epoch in block order continues exactly
    first = pieces(take(a, 13))["text"]
    b = Mixer(cfg, with_docs=True)
    b.load_state_dict(a.state_dict())
    assert first + pieces(take(b, 17))["text"] == pieces(take(Mixer(cfg, with_docs=True), 30))["text"]


def test_every_source_is_packed_by_default(mix_data):
    st_ = Mixer(mix_cfg(mix_data)).stats()
    assert all(s["pack"] for s in st_["sources"].values())


def test_preview_warns_when_padding_exceeds_a_fifth(mix_data):
    from trimodal.mixer.preview import format_preview, preview_mix

    paper = preview_mix(mix_cfg(mix_data, source_opts={n: {"pack": None} for n in mix_data}), 20)
    assert paper["pad_fraction"] > 0.2 and "padding" in paper["warnings"][0]
    assert "warning: padding" in format_preview(paper)
    packed = preview_mix(mix_cfg(mix_data), 20)
    assert packed["pad_fraction"] <= 0.2 and packed["warnings"] == []
    assert "warning" not in format_preview(packed)


def _per_document(m: Mixer) -> Mixer:
    """The same mixer made to read through the per-document path (what S3 and pread use)."""
    m.fetcher.mapped = dict.fromkeys(m.fetcher.mapped, False)
    return m


@pytest.mark.parametrize("per_shard", [0, 10**6])  # spans located per shard, or piece by piece
@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("pack", [True, None])
def test_map_path_equals_the_per_document_path(mix_data, world, pack, per_shard, monkeypatch):
    """On memory-mapped shards a batch is rendered from its piece table with array operations:
    byte for byte what the per-document path renders, for text windows and pairs in both
    directions, over three datasets, with the same state and bytes counted."""
    from trimodal.mixer import mapped

    monkeypatch.setattr(mapped, "PIECES_PER_SHARD", per_shard)
    opts = {n: {"pack": pack, "reverse_prob": 0.5} for n in mix_data}
    cfg = mix_cfg(mix_data, global_batch=6, source_opts=opts)
    fast = Mixer(cfg, rank=world - 1, world_size=world, with_docs=True)
    slow = _per_document(Mixer(cfg, rank=world - 1, world_size=world, with_docs=True))
    for _ in range(60):
        a, b = next(fast), next(slow)
        assert a["docs"] == b["docs"]
        for k in KEYS:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])
    assert fast.state_dict() == slow.state_dict()
    f, s = fast.io_stats(), slow.io_stats()
    assert all(f[d]["code_bytes"] == s[d]["code_bytes"] > 0 for d in f)


def test_piece_table_tiles_each_row_with_document_windows(mix_data):
    """Rows handed out in any subset: each row's pieces are windows of whole documents laid end
    to end, filling exactly the tokens `take` reported; a text document split across rows
    continues where the previous row stopped."""
    from trimodal.mixer.pieces import segments

    m = Mixer(mix_cfg(mix_data, source_opts={"text": {"pack": True}}))
    st_ = m.streams["text"]
    fills = [st_.take() for _ in range(12)]
    serials = [0, 1, 2, 5, 6, 11]
    rows = segments(st_.piece_table(serials), len(serials))
    every = segments(st_.piece_table(list(range(12))), 12)
    assert rows == [every[s] for s in serials]
    for s, pieces in enumerate(every):
        assert sum(p.stop - p.start for p in pieces) == fills[s]
        assert all(0 <= p.start < p.stop <= p.text_codes + 2 for p in pieces)
        assert all(p.start == 0 for p in pieces[1:])  # only a row's first piece continues a document
        assert all(p.stop == p.text_codes + 2 for p in pieces[:-1])  # only its last may be cut
        if s and every[s - 1][-1].stop < every[s - 1][-1].text_codes + 2:
            prev = every[s - 1][-1]
            assert (pieces[0].sample, pieces[0].start) == (prev.sample, prev.stop)


@pytest.mark.parametrize("modality,code", [("image", 64), ("audio", 32), ("text", -1)])
@pytest.mark.parametrize("path", ["maps", "per_document"])
def test_codes_outside_their_codebook_are_named_on_both_paths(tmp_path, modality, code, path):
    """An image code past 64 or an audio code past its level's 32 (which would still be an
    audio id, of the next level) or a negative text code: the sample is named."""
    make = {"image": image_rows, "audio": audio_rows, "text": text_rows}[modality]
    rows = make(40)
    rows[17][modality] = rows[17][modality].copy()
    rows[17][modality][1] = code
    fps = ("text",) if modality == "text" else ("text", modality)
    ds = build(tmp_path / "bad", rows, fps=fps)
    source = rows[17]["source"]
    cfg = {"sources": [{"name": "s", "dataset": ds, "share": 1, "max_epochs": 1}], "seq_len": 256, "global_batch": 4}
    m = Mixer(cfg)
    if path == "per_document":
        _per_document(m)
    with pytest.raises(IntegrityError, match=f"{source}/17"):
        list(m)


def test_batches_the_caller_keeps_are_never_written_again(mix_data):
    """Batches are rendered into the arrays of the batch before last only when nothing else
    holds them: kept batches, views and tensors of them keep their values."""
    import torch

    m = Mixer(mix_cfg(mix_data))
    kept = [next(m) for _ in range(3)]
    copies = [{k: b[k].copy() for k in KEYS} for b in kept]
    tensor = torch.from_numpy(next(m)["tokens"])
    tensor_copy = tensor.clone()
    view = next(m)["segment_ids"][:, :5]
    view_copy = view.copy()
    for _ in range(8):
        next(m)
    for b, c in zip(kept, copies):
        for k in KEYS:
            np.testing.assert_array_equal(b[k], c[k])
    assert torch.equal(tensor, tensor_copy)
    np.testing.assert_array_equal(view, view_copy)
    import weakref

    seen, expected = [], Mixer(mix_cfg(mix_data))
    ref = [next(expected) for _ in range(12)]
    m = Mixer(mix_cfg(mix_data))
    for i in range(12):
        b = next(m)
        tokens = b["tokens"] if b["tokens"].base is None else b["tokens"].base
        if i >= 2:  # a plain loop: two sets of arrays take turns (weak references hold nothing)
            assert seen[i - 2]() is tokens
        seen.append(weakref.ref(tokens))
        for k in KEYS:
            np.testing.assert_array_equal(b[k], ref[i][k])
        del tokens
