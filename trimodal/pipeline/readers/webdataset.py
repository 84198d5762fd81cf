"""WebDataset tar shards of image-caption or audio-transcript pairs (``.tar``, ``.tgz``,
``.tar.gz``, ``.tar.zst``).

Members are grouped exactly as the `webdataset` library groups them (its `tar_file_expander` +
`group_by_keys`: key = member path up to the first dot of the basename, so dots in directory
names are kept and ``a/x.seg.jpg`` is key ``a/x`` with extension ``seg.jpg``; extensions are
lower-cased). The tar is opened through the storage layer as a buffered stream, so S3 works
with the ordinary credentials chain, without presigned URLs or ``pipe:`` commands.

The media member is the first of `image_keys` / `audio_keys` present, the caption the first of
`caption_keys` present (a ``json`` member contributes the first of `json_caption_fields` it
has). Keys are ``<tar key>/<webdataset key>``, origins ``<uri>#<webdataset key>``. Media bytes
are handed over undecoded, zero-byte members included (the tokenizers judge media).

Truncated or corrupt tars: every complete sample before the damage is yielded, then the stream
error propagates (`read_input` turns it into an InputError naming the tar and how many records
it gave). The sample being assembled when the data ran out is not yielded: its members may be
incomplete. Where tarfile would stop silently (a cut between members or inside a header, a
corrupt header), `_EndCheck` turns the early stop into the same error. A key that reappears later in the same tar (members not adjacent) is a
``duplicate_key`` record, because two samples with one id would collide in the dataset.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

from trimodal.errors import InputError
from trimodal.pipeline.readers.common import decode_utf8, encodable, error, open_stream, record
from trimodal.pipeline.sources import CorpusSource


class _EndCheck(io.RawIOBase):
    """Pass-through reader that lets a tar's end be verified.

    Python's tarfile (and so webdataset) stops *silently* at a header it cannot parse, at a
    header cut short, or at end of data between members: a truncated download or a flipped bit
    in a header would drop every later sample without a word. A valid archive ends with a zero
    block followed only by zeros, and its length is a multiple of 512. `check` enforces that
    once tarfile has stopped: it reads the rest of the stream and raises InputError if anything
    non-zero follows, or if the data ended without the zero block. (Damage in the last few KB
    that tarfile had already buffered past can still go unseen; a cut in member data is caught
    by tarfile itself.)
    """

    def __init__(self, raw, uri: str):
        self.raw = raw
        self.uri = uri
        self.total = 0
        self.tail = b""

    def __repr__(self) -> str:  # webdataset names the stream in its error messages
        return self.uri

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.total += n
        self.tail = (self.tail + data)[-BLOCK:] if n < BLOCK else data[-BLOCK:]
        return n

    def check(self, uri: str) -> None:
        while True:
            chunk = self.raw.read(1 << 20)
            if not chunk:
                break
            if chunk.strip(b"\0"):
                raise InputError(
                    f"cannot read {uri}: data after where tar reading stopped at byte "
                    f"~{self.total} (a corrupt member header, or concatenated tars)"
                )
            self.total += len(chunk)
            self.tail = (self.tail + chunk)[-BLOCK:]
        if self.total % BLOCK:
            raise InputError(
                f"cannot read {uri}: truncated ({self.total} bytes is not a whole number of 512-byte tar blocks)"
            )
        if len(self.tail) < BLOCK or self.tail.strip(b"\0"):
            raise InputError(f"cannot read {uri}: truncated (no end-of-archive marker after {self.total} bytes)")


BLOCK = 512


def _samples(uri: str, duplicates: set[str]) -> Iterator[dict]:
    """webdataset's own grouping over our stream; duplicate members are noted, not fatal."""
    # Imported here: `webdataset` imports torch (~2 s), which every read task would pay at start.
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def on_group_error(exn: Exception) -> bool:
        # group_by_keys raises ValueError("<fname>: duplicate file name ...") for a second member
        # with the same extension; remember its key and keep the first member.
        msg = str(exn.args[0]) if exn.args else ""
        if isinstance(exn, ValueError) and "duplicate file name" in msg:
            duplicates.add(msg.split(":", 1)[0])
            return True
        return False

    def reraise(exn: Exception) -> bool:
        raise exn

    with open_stream(uri) as raw:
        stream = _EndCheck(raw, uri)

        def checked(files: Iterator[dict]) -> Iterator[dict]:
            for f in files:
                if f == {}:  # tar_file_expander's end-of-shard marker: verify before the last sample goes out
                    stream.check(uri)
                yield f

        files = tar_file_expander([{"url": uri, "stream": stream}], handler=reraise)
        yield from group_by_keys(checked(files), handler=on_group_error)


def read(source: CorpusSource, uri: str, file_key: str, wanted: set[str] | None = None) -> Iterator[dict]:
    remaining = set(wanted) if wanted is not None else None
    media_role = "image" if source.kind == "image_text" else "audio"
    media_keys = source.image_keys if media_role == "image" else source.audio_keys
    seen: set[str] = set()
    dup_members: set[str] = set()
    for sample in _samples(uri, dup_members):
        wkey = sample["__key__"]
        if remaining is not None:
            if wkey not in remaining:
                continue
            remaining.discard(wkey)
        key, origin = f"{file_key}/{wkey}", f"{uri}#{wkey}"
        if wkey in seen:
            yield error(
                source, key, origin, "duplicate_key", "key occurs again later in the tar (its members are not adjacent)"
            )
            continue
        seen.add(wkey)
        yield _pair(source, sample, key, origin, media_role, media_keys, dup_members)
        if remaining is not None and not remaining:
            return


def _pair(
    source: CorpusSource,
    sample: dict,
    key: str,
    origin: str,
    media_role: str,
    media_keys: list[str],
    dup_members: set[str],
) -> dict:
    wkey = sample["__key__"]
    if any(d.startswith(wkey + ".") for d in dup_members):
        return error(source, key, origin, "duplicate_member", "two members with the same extension")
    members = sorted(k for k in sample if not k.startswith("__"))
    media_ext = next((k for k in media_keys if k in sample), None)
    if media_ext is None:
        return error(
            source,
            key,
            origin,
            f"missing_{media_role}",
            f"no {'/'.join(media_keys)} member (members: {', '.join(members) or 'none'})",
        )
    # Zero-byte members pass through: judging media is the tokenizer's job (it names them
    # empty or corrupt), and a reader that decodes nothing cannot tell more.
    media = {media_role: sample[media_ext]}
    missing = source.missing_caption_reason
    present = [k for k in source.caption_keys if k in sample]
    if not present:
        return error(
            source,
            key,
            origin,
            missing,
            f"no {'/'.join(source.caption_keys)} member (members: {', '.join(members)})",
            **media,
        )
    ext = present[0]
    text = decode_utf8(sample[ext])
    if text is None:
        return error(source, key, origin, "invalid_utf8", f".{ext} member is not valid UTF-8", **media)
    if ext == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            return error(source, key, origin, "bad_json", f".json member: {e.msg} at column {e.colno}", **media)
        if not isinstance(obj, dict):
            return error(
                source, key, origin, "bad_json", f".json member is a {type(obj).__name__}, not an object", **media
            )
        field = next((f for f in source.json_caption_fields if obj.get(f) is not None), None)
        if field is None:
            return error(
                source,
                key,
                origin,
                missing,
                f".json member has none of the fields {source.json_caption_fields}",
                **media,
            )
        value = obj[field]
        if not isinstance(value, str):
            return error(
                source,
                key,
                origin,
                "bad_field",
                f".json field {field!r} is {type(value).__name__}, expected a string",
                **media,
            )
        if not encodable(value):
            return error(source, key, origin, "invalid_utf8", f".json field {field!r} holds a lone surrogate", **media)
        text = value
    if not text.strip():
        return error(source, key, origin, missing, f".{ext} caption is empty", **media)
    return record(source, key, origin, text=text, **media)


def member_extensions(uri: str, wkey: str | None = None) -> set[str]:
    """Member extensions of sample `wkey` (None: the first sample) in a tar; empty if absent."""
    for sample in _samples(uri, set()):
        if wkey is None or sample["__key__"] == wkey:
            return {k for k in sample if not k.startswith("__")}
    return set()
