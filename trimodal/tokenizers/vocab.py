"""The unified vocabulary: one id space over specials, text, image and every audio level.

Layout: ``[specials | text | image | audio level 0 | audio level 1 | ...]``, derived only from
the tokenizers' fingerprints, so the same codecs always give the same ids. Shards keep codec
codes; the mixer maps them through `Vocabulary.codes_to_ids` at read time. Saved as
``vocab.json`` beside every mix state and checkpoint; a dataset whose fingerprint differs from
the vocabulary's is refused with both named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from trimodal.dataset.schema import MODALITIES
from trimodal.errors import IntegrityError

NUM_SPECIALS = 32  # fixed block; unused slots are reserved so adding a task keeps ids stable
SPECIAL_TOKENS = (
    "<pad>",
    "<mask>",
    "<bos>",
    "<eos>",
    "<boi>",
    "<eoi>",
    "<boa>",
    "<eoa>",
    "<t2i>",
    "<i2t>",
    "<t2s>",
    "<s2t>",
    "<text>",
    "<sep>",
    "<unk>",
)

# Per-token modality tags carried in batches next to the ids.
MODALITY_IDS = {"pad": 0, "text": 1, "image": 2, "audio": 3, "special": 4}

# Fingerprint fields that must agree for two datasets to share ids: the same weights and id
# layout. Never a label (base.LABEL_FIELDS, e.g. the file's name): a moved codec file is the
# same codec here as in the resume check (pipeline, which compares base.code_identity).
IDENTITY_FIELDS = ("kind", "codebook_size", "levels", "weights_sha256")


def _specials() -> list[str]:
    return list(SPECIAL_TOKENS) + [f"<reserved_{i}>" for i in range(len(SPECIAL_TOKENS), NUM_SPECIALS)]


@dataclass
class Vocabulary:
    fingerprints: dict[str, dict]  # modality -> tokenizer fingerprint
    specials: list[str] = field(default_factory=_specials)

    def __post_init__(self):
        self._special_ids = {s: i for i, s in enumerate(self.specials)}
        self._bases: dict[str, tuple[int, int, int]] = {}  # modality -> (start, size, levels)
        start = len(self.specials)
        for modality in MODALITIES:
            fp = self.fingerprints.get(modality)
            if fp is None:
                continue
            size, levels = int(fp["codebook_size"]), int(fp.get("levels", 1))
            self._bases[modality] = (start, size, levels)
            start += size * levels
        self.size = start

    @classmethod
    def from_fingerprints(cls, fingerprints: dict[str, dict]) -> Vocabulary:
        return cls(fingerprints={k: v for k, v in fingerprints.items() if v is not None})

    # ids ------------------------------------------------------------------------------
    def special(self, name: str) -> int:
        return self._special_ids[name]

    @property
    def pad_id(self) -> int:
        return self._special_ids["<pad>"]

    @property
    def mask_id(self) -> int:
        return self._special_ids["<mask>"]

    def has(self, modality: str) -> bool:
        return modality in self._bases

    def range(self, modality: str, level: int | None = None) -> tuple[int, int]:
        """[start, stop) of a modality's ids (all levels, or one audio level)."""
        if modality == "special":
            return 0, len(self.specials)
        if modality not in self._bases:
            raise KeyError(f"vocabulary has no {modality!r} tokenizer")
        start, size, levels = self._bases[modality]
        if level is None:
            return start, start + size * levels
        if not 0 <= level < levels:
            raise KeyError(f"{modality} has {levels} levels, asked for level {level}")
        return start + level * size, start + (level + 1) * size

    def levels(self, modality: str) -> int:
        return self._bases[modality][2]

    def codes_to_ids(self, modality: str, codes: np.ndarray) -> np.ndarray:
        """Flat stored codes (audio frame-major) → unified ids (int32)."""
        start, size, levels = self._bases[modality]
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= size):
            raise IntegrityError(f"{modality} codes outside [0, {size}): min {codes.min()}, max {codes.max()}")
        if levels == 1:
            return (codes + start).astype(np.int32)
        level = np.arange(codes.size, dtype=np.int64) % levels
        return (codes + start + level * size).astype(np.int32)

    def ids_to_codes(self, modality: str, ids: np.ndarray) -> np.ndarray:
        """Inverse of `codes_to_ids`; ids outside the modality's range raise."""
        start, size, levels = self._bases[modality]
        ids = np.asarray(ids, dtype=np.int64)
        lo, hi = start, start + size * levels
        if ids.size and (ids.min() < lo or ids.max() >= hi):
            raise ValueError(f"ids outside the {modality} range [{lo}, {hi})")
        return ((ids - start) % size).astype(np.int32)

    def modality_of(self, ids: np.ndarray) -> np.ndarray:
        """Per-token modality tag (MODALITY_IDS) of unified ids; pad → 0, other specials → 4."""
        ids = np.asarray(ids)
        out = np.full(ids.shape, MODALITY_IDS["special"], dtype=np.int8)
        out[ids == self.pad_id] = MODALITY_IDS["pad"]
        for modality, (start, size, levels) in self._bases.items():
            out[(ids >= start) & (ids < start + size * levels)] = MODALITY_IDS[modality]
        return out

    # compatibility --------------------------------------------------------------------
    def check(self, modality: str, fingerprint: dict, what: str = "dataset") -> None:
        """Refuse a dataset whose tokenizer for `modality` differs from this vocabulary's."""
        mine = self.fingerprints.get(modality)
        if mine is None:
            raise IntegrityError(f"{what} has {modality} codes but the vocabulary has no {modality} tokenizer")
        diff = [k for k in IDENTITY_FIELDS if mine.get(k) != fingerprint.get(k)]
        if diff:
            detail = ", ".join(f"{k}: vocabulary={mine.get(k)!r} vs {what}={fingerprint.get(k)!r}" for k in diff)
            raise IntegrityError(
                f"{what}'s {modality} tokenizer {fingerprint.get('name')!r} does not match the "
                f"vocabulary's {mine.get('name')!r} ({detail})"
            )

    # persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": 1,
            "size": self.size,
            "specials": self.specials,
            "ranges": {m: {"start": s, "codebook_size": n, "levels": l} for m, (s, n, l) in self._bases.items()},
            "fingerprints": self.fingerprints,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        v = cls(fingerprints=d["fingerprints"], specials=list(d["specials"]))
        for m, r in d.get("ranges", {}).items():
            if v._bases.get(m) != (r["start"], r["codebook_size"], r["levels"]):
                raise IntegrityError(f"vocab.json range for {m} does not match its fingerprints")
        return v

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls.from_dict(json.loads(text))

    def save(self, uri: str) -> None:
        from trimodal.dataset.storage import resolve

        resolve(uri).write_bytes_atomic(self.to_json().encode())

    @classmethod
    def load(cls, uri: str) -> Vocabulary:
        from trimodal.dataset.storage import resolve

        return cls.from_json(resolve(uri).read_bytes().decode())
