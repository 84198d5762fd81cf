"""Text tokenizer: SentencePiece from a local ``.model`` file, and training one on local corpora.

Encoding uses SentencePiece's batched ``encode(list, num_threads=...)`` (C++ threads, no GIL) and
converts each result to an int32 array once; there is no per-token Python work. Over-long text is
never truncated silently: with ``max_tokens`` set it is rejected as ``text_too_long`` (the
pipeline quarantines it; the user picks the limit). Empty or whitespace-only text is rejected as
``empty_text``; bytes are accepted if they are UTF-8, else rejected as ``invalid_utf8`` (as is a str
holding lone surrogates), never decoded with replacement characters.

Models trained here use identity normalization, keep whitespace and fall back to bytes, so that
``decode(encode(s)) == s`` for any string (one exception inherent to SentencePiece: the
meta-symbol U+2581 "▁" itself decodes as a space). BOS/EOS are not part of the SentencePiece
vocabulary because the unified vocabulary adds its own specials.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from trimodal.dataset.digest import file_sha256
from trimodal.dataset.storage import write_local_atomic
from trimodal.errors import ConfigError, InputError, SampleError
from trimodal.tokenizers.base import Tokenizer, raise_first, register
from trimodal.tokenizers.media import item_name


class SentencePieceTokenizer(Tokenizer):
    modality = "text"
    levels = 1

    def __init__(
        self,
        path: str,
        max_tokens: int | None = None,
        num_threads: int | None = None,
        batch_size: int = 1024,
        device: str | None = None,
    ):
        # `device` is accepted so that callers can pass one hint to every tokenizer; SentencePiece
        # runs on CPU threads whatever it says.
        import sentencepiece as spm

        if not os.path.isfile(path):
            raise ConfigError(f"sentencepiece model not found: {path}")
        self.path = str(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=self.path)
        except Exception as e:
            raise ConfigError(f"{path}: not a SentencePiece model ({e})") from None
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens = max_tokens
        self.num_threads = num_threads or min(8, os.cpu_count() or 1)
        self.batch_size = batch_size
        self.codebook_size = int(self.sp.get_piece_size())
        self._fp: dict | None = None

    # encode / decode --------------------------------------------------------------------
    def encode(self, batch: Sequence[str]) -> list[np.ndarray]:
        return raise_first(self.encode_each(batch))

    def encode_each(self, batch: Sequence[str | bytes], names: Sequence[str] | None = None) -> list:
        """str (or UTF-8 bytes) per item → int32 ids, or a SampleError in place: `empty_text`,
        `invalid_utf8` (undecodable bytes, lone surrogates), `bad_text`, `text_too_long`."""
        out: list = [None] * len(batch)
        ok_idx, ok_text = [], []
        for i, s in enumerate(batch):
            if isinstance(s, (bytes, bytearray, memoryview)):
                try:
                    s = bytes(s).decode("utf-8")
                except UnicodeDecodeError as e:
                    out[i] = SampleError(
                        "invalid_utf8", f"{item_name(i, names)}: text is not valid UTF-8 (byte {e.start}: {e.reason})"
                    )
                    continue
            if not isinstance(s, str):
                out[i] = SampleError(
                    "empty_text" if s is None else "bad_text",
                    f"{item_name(i, names)}: expected text, got {type(s).__name__}",
                )
            elif not s or s.isspace():
                out[i] = SampleError("empty_text", f"{item_name(i, names)}: text is empty or whitespace only")
            else:
                ok_idx.append(i)
                ok_text.append(s)
        if ok_text:
            try:
                ids = self.sp.encode(ok_text, num_threads=self.num_threads)
            except (TypeError, UnicodeError):
                # A str that cannot become UTF-8 (lone surrogates, e.g. from surrogateescape
                # decoding) fails the whole batched call; find it only on this rare path so the
                # common path pays nothing per item.
                ids = self._encode_checked(ok_idx, ok_text, names, out)
            for i, seq in zip(ok_idx, ids):
                if seq is None:
                    continue
                if self.max_tokens is not None and len(seq) > self.max_tokens:
                    out[i] = SampleError(
                        "text_too_long",
                        f"{item_name(i, names)}: {len(seq)} tokens exceeds max_tokens={self.max_tokens}",
                    )
                else:
                    out[i] = np.asarray(seq, dtype=np.int32)
        return out

    def _encode_checked(self, idx: list[int], texts: list[str], names, out: list) -> list:
        good = []
        for i, s in zip(idx, texts):
            try:
                s.encode("utf-8")
                good.append(s)
            except UnicodeEncodeError as e:
                out[i] = SampleError(
                    "invalid_utf8", f"{item_name(i, names)}: text has no UTF-8 form (character {e.start}: {e.reason})"
                )
                good.append(None)
        ids = iter(self.sp.encode([s for s in good if s is not None], num_threads=self.num_threads))
        return [next(ids) if s is not None else None for s in good]

    def decode(self, codes: Sequence[np.ndarray]) -> list[str]:
        return self.sp.decode([np.asarray(c).astype(int).tolist() for c in codes])

    # identity ---------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        if self._fp is None:
            import sentencepiece

            trainer = self.sp.serialized_model_proto()
            from sentencepiece import sentencepiece_model_pb2 as pb  # ships with the wheel

            proto = pb.ModelProto()
            proto.ParseFromString(trainer)
            self._fp = {
                "kind": "sentencepiece",
                "name": Path(self.path).stem,
                "modality": "text",
                "codebook_size": self.codebook_size,
                "levels": 1,
                "model_type": pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type).lower(),
                "byte_fallback": bool(proto.trainer_spec.byte_fallback),
                "normalization": proto.normalizer_spec.name,
                "weights_sha256": file_sha256(self.path),
                "library": "sentencepiece",
                "library_version": sentencepiece.__version__,
            }
        # max_tokens rejects samples but never changes the codes of the ones kept.
        return dict(self._fp)


@register("sentencepiece")
def load_sentencepiece(path: str, **options) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(path, **options)


# ----------------------------------------------------------------------------- training


def iter_corpus(inputs: Sequence[str], field: str = "text") -> Iterator[str]:
    """Documents from .txt (one per line) and .jsonl (the `field` of each record) files, .gz ok."""
    for path in inputs:
        p = str(path)
        if not os.path.isfile(p):
            raise InputError(f"corpus file not found: {p}")
        base = p[:-3] if p.endswith(".gz") else p
        opener = gzip.open if p.endswith(".gz") else open
        is_jsonl = base.endswith((".jsonl", ".json", ".ndjson"))
        try:
            with opener(p, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if is_jsonl:
                        if not line.strip():
                            continue
                        try:
                            rec = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise InputError(f"{p}:{lineno}: invalid JSON ({e})") from None
                        text = rec.get(field) if isinstance(rec, dict) else None
                        if isinstance(text, str) and text.strip():
                            yield text
                    else:
                        line = line.rstrip("\n")
                        if line.strip():
                            yield line
        except UnicodeDecodeError as e:
            raise InputError(f"{p}: not UTF-8 text ({e})") from None


def train_text_tokenizer(
    inputs: Sequence[str],
    out_prefix: str,
    vocab_size: int,
    model_type: str = "bpe",
    byte_fallback: bool = True,
    field: str = "text",
    max_sentences: int = 5_000_000,
    num_threads: int | None = None,
    seed: int = 0,
) -> str:
    """Train a SentencePiece model on local corpora; returns the path of ``<out_prefix>.model``.

    `max_sentences` caps how many documents SentencePiece samples (it holds them in memory);
    larger corpora are reservoir-sampled by SentencePiece itself.
    """
    import sentencepiece as spm

    if model_type not in ("bpe", "unigram"):
        raise ConfigError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    if vocab_size < 8:
        raise ConfigError(f"vocab_size must be at least 8, got {vocab_size}")
    if not inputs:
        raise ConfigError("no corpus files given")
    out_prefix = str(out_prefix)
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    docs = iter_corpus(inputs, field=field)
    try:
        first = next(docs)
    except StopIteration:
        raise InputError(f"no text found in {list(inputs)} (field {field!r} for JSONL)") from None

    def all_docs():
        yield first
        yield from docs

    spm.set_random_generator_seed(seed)  # the sentence sampling is the only random step
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=all_docs(),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=byte_fallback,
            character_coverage=0.9995 if byte_fallback else 1.0,
            # identity + kept whitespace + byte fallback → exact round trips
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            unk_id=0,
            max_sentence_length=1 << 20,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=1_000_000,
            num_threads=num_threads or min(16, os.cpu_count() or 1),
            minloglevel=2,
        )
    except RuntimeError as e:
        # e.g. "Vocabulary size too high (512). Please set it to a value <= 430."
        raise ConfigError(f"vocab_size: SentencePiece training failed: {e}") from None
    # Written through `model_writer` rather than `model_prefix`: the file then does not embed the
    # output path, so the same corpus and options give byte-identical models (same fingerprint)
    # wherever they are written. Both files are replaced atomically.
    blob = model.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=blob)
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
    write_local_atomic(out_prefix + ".vocab", vocab.encode("utf-8"))
    write_local_atomic(out_prefix + ".model", blob)
    return out_prefix + ".model"
