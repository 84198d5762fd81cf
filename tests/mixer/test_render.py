"""Rendering codes into the unified sequence layout (docs/design.md), piece by piece."""

import numpy as np

from tests.mixer.conftest import FPS
from trimodal.mixer.layout import AUDIO, IMAGE, TEXT, doc_kinds, doc_lengths
from trimodal.mixer.render import Renderer
from trimodal.tokenizers.vocab import MODALITY_IDS, Vocabulary

V = Vocabulary.from_fingerprints(FPS)
R = Renderer(V)
S, T, I, A = (MODALITY_IDS[m] for m in ("special", "text", "image", "audio"))
sp = V.special


def render(kind, reverse, text, image=None, audio=None, start=0, stop=None):
    n = int(
        doc_lengths(
            np.array([kind]),
            {
                "text": np.array([len(text)]),
                "image": np.array([-1 if image is None else len(image)]),
                "audio": np.array([-1 if audio is None else len(audio)]),
            },
        )[0]
    )
    stop = n if stop is None else stop
    tok = np.full(stop - start, -1, np.int32)
    mod = np.full(stop - start, -1, np.int8)
    R.write(
        tok,
        mod,
        0,
        start,
        stop,
        kind,
        reverse,
        np.asarray(text, np.int32),
        None if image is None else np.asarray(image, np.int32),
        None if audio is None else np.asarray(audio, np.int32),
    )
    return tok.tolist(), mod.tolist()


def test_text_document():
    t0 = V.range("text")[0]
    tok, mod = render(TEXT, False, [0, 5, 99])
    assert tok == [sp("<bos>"), t0, t0 + 5, t0 + 99, sp("<eos>")]
    assert mod == [S, T, T, T, S]


def test_image_pair_both_directions():
    t0, i0 = V.range("text")[0], V.range("image")[0]
    tok, mod = render(IMAGE, False, [1, 2], image=[0, 63])
    assert tok == [sp("<bos>"), sp("<t2i>"), t0 + 1, t0 + 2, sp("<boi>"), i0, i0 + 63, sp("<eoi>"), sp("<eos>")]
    assert mod == [S, S, T, T, S, I, I, S, S]
    tok, mod = render(IMAGE, True, [1, 2], image=[0, 63])
    assert tok == [sp("<bos>"), sp("<i2t>"), sp("<boi>"), i0, i0 + 63, sp("<eoi>"), t0 + 1, t0 + 2, sp("<eos>")]
    assert mod == [S, S, S, I, I, S, T, T, S]


def test_audio_codes_map_to_their_level():
    t0 = V.range("text")[0]
    l0, l1 = V.range("audio", 0)[0], V.range("audio", 1)[0]
    tok, mod = render(AUDIO, False, [7], audio=[3, 3, 31, 0])  # frame-major: f0 (l0, l1), f1 (l0, l1)
    assert tok == [
        sp("<bos>"),
        sp("<t2s>"),
        t0 + 7,
        sp("<boa>"),
        l0 + 3,
        l1 + 3,
        l0 + 31,
        l1 + 0,
        sp("<eoa>"),
        sp("<eos>"),
    ]
    assert mod == [S, S, T, S, A, A, A, A, S, S]
    assert V.ids_to_codes("audio", np.array(tok[4:8])).tolist() == [3, 3, 31, 0]


def test_any_window_equals_the_slice_of_the_whole():
    rng = np.random.default_rng(0)
    text, audio = rng.integers(0, 100, 37), rng.integers(0, 32, 2 * 11)
    whole_t, whole_m = render(AUDIO, True, text, audio=audio)
    for start in range(0, len(whole_t), 7):
        for stop in range(start + 1, len(whole_t) + 1, 5):
            t, m = render(AUDIO, True, text, audio=audio, start=start, stop=stop)
            assert t == whole_t[start:stop] and m == whole_m[start:stop]


def test_kinds_and_lengths():
    lens = {"text": np.array([3, 3, 3, 3]), "image": np.array([-1, 16, -1, 16]), "audio": np.array([-1, -1, 8, 8])}
    kinds = doc_kinds(lens)
    assert kinds.tolist()[:3] == [TEXT, IMAGE, AUDIO]
    assert doc_lengths(kinds, lens).tolist()[:3] == [5, 24, 16]


def _cols(text, image, audio):
    """Column views of a one-row record batch: (offsets, values, valid) per column."""
    out = []
    for codes in (text, image, audio):
        if codes is None:
            out.append((np.zeros(2, np.int32), np.zeros(0, np.int32), np.array([False])))
        else:
            out.append((np.array([0, len(codes)], np.int32), np.asarray(codes, np.int32), None))
    return tuple(out)


def test_batch_renderer_equals_the_general_writer():
    """render_batch (the mixer's path) against `write`, the plain per-part writer, for every kind,
    direction and text window, several documents per row."""
    rng = np.random.default_rng(1)
    text, image, audio = rng.integers(0, 100, 9), rng.integers(0, 64, 16), rng.integers(0, 32, 2 * 7)
    docs = {0: (TEXT, text, None, None), 1: (IMAGE, text, image, None), 2: (AUDIO, text, None, audio)}
    views = {"src": lambda s, b: _cols(*docs[s][1:])}
    cases = [[(1, False, 0, 30), (2, True, 0, 28)], [(2, False, 0, 28), (1, True, 0, 30)]]
    cases += [[(0, False, a, z)] for a in range(11) for z in range(a + 1, 12)]
    cases += [[(0, False, 3, 11), (1, False, 0, 30), (0, False, 0, 4)]]
    for segs in cases:
        want_t, want_m = [], []
        for s, rev, a, z in segs:
            kind, t, i, au = docs[s]
            wt, wm = render(kind, rev, t, image=i, audio=au, start=a, stop=z)
            want_t += wt
            want_m += wm
        plan = [("src", [(0, 0, s, 0, 0, docs[s][0], rev, a, z) for s, rev, a, z in segs], len(want_t)), None]
        tok, mod, seg, pos = R.render_batch(plan, views, 64)
        n = len(want_t)
        assert tok[0, :n].tolist() == want_t and mod[0, :n].tolist() == want_m
        assert (tok[0, n:] == V.pad_id).all() and (mod[0, n:] == 0).all() and (seg[0, n:] == 0).all()
        assert (tok[1] == V.pad_id).all() and (seg[1] == 0).all()
        k = 0
        for d, (s, rev, a, z) in enumerate(segs, 1):
            assert seg[0, k : k + z - a].tolist() == [d] * (z - a)
            assert pos[0, k : k + z - a].tolist() == list(range(z - a))
            k += z - a
