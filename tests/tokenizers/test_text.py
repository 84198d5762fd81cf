"""SentencePiece text tokenizer: training from txt / jsonl / gz, exact round trips, clear
per-sample errors, fingerprints, and the `trimodal tokenizer train-text` command."""

import gzip
import json

import numpy as np
import pytest

from tests.fixtures.codecs import make_text_corpus
from trimodal.errors import ConfigError, InputError, SampleError
from trimodal.tokenizers.base import load_tokenizer
from trimodal.tokenizers.text import SentencePieceTokenizer, iter_corpus, train_text_tokenizer

ODD_TEXTS = [
    "Plain words and 12345 digits.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "café naïve Zürich ñandú",
    "日本語のテキストと中文",  # mostly unseen characters: byte fallback
    "emoji 😀🎉 and symbols ∑∫√ ©®",
    "x",
]


@pytest.fixture(scope="module")
def tok(text_tokenizer_path):
    return load_tokenizer("sentencepiece", text_tokenizer_path)


def test_round_trip_is_exact(tok):
    codes = tok.encode(ODD_TEXTS)
    assert all(c.dtype == np.int32 and c.ndim == 1 and len(c) > 0 for c in codes)
    assert all(c.min() >= 0 and c.max() < tok.codebook_size for c in codes)
    assert tok.codebook_size == 512
    assert tok.decode(codes) == ODD_TEXTS


def test_batch_and_single_encodes_agree(tok):
    batch = tok.encode(ODD_TEXTS)
    for text, codes in zip(ODD_TEXTS, batch):
        np.testing.assert_array_equal(tok.encode([text])[0], codes)


def test_utf8_bytes_are_accepted(tok):
    s = "café 日本"
    np.testing.assert_array_equal(tok.encode([s.encode("utf-8")])[0], tok.encode([s])[0])


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "empty_text"),
        ("   \n\t ", "empty_text"),
        (None, "empty_text"),
        (b"caf\xe9 latin-1", "invalid_utf8"),
        ("lone surrogate \udcff here", "invalid_utf8"),
        (42, "bad_text"),
    ],
)
def test_bad_text_is_isolated_and_named(tok, bad, reason):
    names = ["doc-ok-1", "doc-bad", "doc-ok-2"]
    out = tok.encode_each(["good text", bad, "more good text"], names=names)
    assert isinstance(out[1], SampleError) and out[1].reason == reason
    assert "doc-bad" in str(out[1])
    assert tok.decode([out[0], out[2]]) == ["good text", "more good text"]
    with pytest.raises(SampleError) as e:  # `encode` raises, naming the batch index
        tok.encode(["good text", bad])
    assert e.value.reason == reason and "#1" in str(e.value)


def test_max_tokens_rejects_instead_of_truncating(text_tokenizer_path):
    tok = SentencePieceTokenizer(text_tokenizer_path, max_tokens=5)
    out = tok.encode_each(["short", "a much longer text that certainly needs more than five pieces"], names=["a", "b"])
    assert isinstance(out[0], np.ndarray)
    assert isinstance(out[1], SampleError) and out[1].reason == "text_too_long" and "'b'" in str(out[1])
    with pytest.raises(ConfigError, match="max_tokens"):
        SentencePieceTokenizer(text_tokenizer_path, max_tokens=0)


def test_training_is_reproducible_and_path_independent(tmp_path, text_corpus_path, tok):
    a = train_text_tokenizer([text_corpus_path], str(tmp_path / "a" / "one"), vocab_size=512)
    b = train_text_tokenizer([text_corpus_path], str(tmp_path / "b" / "two"), vocab_size=512)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()
    fp_a, fp_b = SentencePieceTokenizer(a).fingerprint(), SentencePieceTokenizer(b).fingerprint()
    assert fp_a["weights_sha256"] == fp_b["weights_sha256"] == tok.fingerprint()["weights_sha256"]
    vocab_lines = (tmp_path / "a" / "one.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == 512 and vocab_lines[0].split("\t")[0] == "<unk>"


def test_fingerprint_names_what_changes_codes(tmp_path, text_corpus_path, tok):
    fp = tok.fingerprint()
    assert fp["kind"] == "sentencepiece" and fp["modality"] == "text" and fp["levels"] == 1
    assert fp["codebook_size"] == 512 and fp["model_type"] == "bpe" and fp["byte_fallback"] is True
    assert fp["library"] == "sentencepiece" and fp["library_version"]
    uni = SentencePieceTokenizer(
        train_text_tokenizer([text_corpus_path], str(tmp_path / "uni"), 512, model_type="unigram")
    )
    small = SentencePieceTokenizer(train_text_tokenizer([text_corpus_path], str(tmp_path / "s400"), 400))
    ids = {tok.fingerprint_id(), uni.fingerprint_id(), small.fingerprint_id()}
    assert len(ids) == 3
    assert uni.fingerprint()["model_type"] == "unigram" and small.fingerprint()["codebook_size"] == 400
    assert uni.decode(uni.encode(ODD_TEXTS)) == ODD_TEXTS  # unigram round trips too


def test_corpus_readers_txt_jsonl_gz(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n  \ntwo\n", encoding="utf-8")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"body": "three"}) + "\n\n" + json.dumps({"body": "", "x": 1}) + "\n")
        f.write(json.dumps({"other": "skipped"}) + "\n" + json.dumps({"body": "four"}) + "\n")
    docs = list(iter_corpus([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl.gz")], field="body"))
    assert docs == ["one", "two", "three", "four"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2"):
        list(iter_corpus([str(tmp_path / "bad.jsonl")]))
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(InputError, match="latin1.txt"):
        list(iter_corpus([str(tmp_path / "latin1.txt")]))
    with pytest.raises(InputError, match="missing.txt"):
        list(iter_corpus([str(tmp_path / "missing.txt")]))


def test_training_errors_are_config_errors(tmp_path, text_corpus_path):
    with pytest.raises(ConfigError, match="model_type"):
        train_text_tokenizer([text_corpus_path], str(tmp_path / "x"), 512, model_type="word")
    (tmp_path / "tiny.txt").write_text("ab ab ab\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="vocab_size"):
        train_text_tokenizer([str(tmp_path / "tiny.txt")], str(tmp_path / "x"), 100_000)
    with pytest.raises(ConfigError, match="not found"):
        SentencePieceTokenizer(str(tmp_path / "nope.model"))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="junk.model"):
        SentencePieceTokenizer(str(tmp_path / "junk.model"))


def run_cli(args, capsys):
    from trimodal.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_train_text_jsonl(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        "".join(json.dumps({"content": line}) + "\n" for line in make_text_corpus(800, seed=3)), encoding="utf-8"
    )
    code, out, _ = run_cli(
        [
            "tokenizer",
            "train-text",
            str(corpus),
            "--field",
            "content",
            "--vocab-size",
            "400",
            "--model-type",
            "unigram",
            "--out",
            str(tmp_path / "m" / "uni"),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    assert result["path"] == str(tmp_path / "m" / "uni.model")
    assert result["fingerprint"]["codebook_size"] == 400 and result["fingerprint"]["model_type"] == "unigram"
    code, out, _ = run_cli(["tokenizer", "fingerprint", "sentencepiece", result["path"]], capsys)
    assert code == 0 and json.loads(out) == result["fingerprint"]


def test_cli_train_text_bad_vocab_size_exits_2(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text("ab ab ab\n", encoding="utf-8")
    code, _, err = run_cli(
        ["tokenizer", "train-text", str(tmp_path / "tiny.txt"), "--vocab-size", "100000", "--out", str(tmp_path / "x")],
        capsys,
    )
    assert code == 2 and "vocab_size" in err
