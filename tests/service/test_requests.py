"""Request parsing and preparation in the ingress (service/requests.py), without Ray: a bad
request is refused before it costs a codec call."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from trimodal.service import requests
from trimodal.service.errors import ServiceError

SERVED = {"text": {}, "image": {}}


def test_request_items_and_modality():
    assert requests.request_items({"modality": "text", "data": "x"}, 4) == ([{"modality": "text", "data": "x"}], False)
    items, is_list = requests.request_items({"modality": "text", "items": [{"data": "a"}, {"modality": "image"}]}, 4)
    assert is_list and [i["modality"] for i in items] == ["text", "image"]
    with pytest.raises(ServiceError) as e:
        requests.request_items({"items": [{}] * 5}, 4)
    assert (e.value.status, e.value.reason) == (413, "too_many_items")
    for bad in ([], "text", {"items": []}, {"items": [1]}):
        with pytest.raises(ServiceError) as e:
            requests.request_items(bad, 4)
        assert e.value.status == 400
    with pytest.raises(ServiceError) as e:
        requests.check_modality({"modality": "audio"}, SERVED, None, "")
    assert (e.value.status, e.value.reason) == (400, "unknown_modality") and "serves text, image" in e.value.message
    assert requests.check_modality({}, SERVED, "image", "") == "image"


def test_raw_media_base64_is_strict():
    assert requests.raw_media({"data": base64.b64encode(b"\x00\xff").decode()}, "image", "") == b"\x00\xff"
    assert requests.raw_media({"data": "plain text"}, "text", "") == "plain text"
    for data in ("no spaces allowed!", 5, None):
        with pytest.raises(ServiceError) as e:
            requests.raw_media({"data": data}, "audio", "items[2].")
        assert e.value.status == 400 and e.value.message.startswith("items[2].data")


IMAGE_FP = {"codebook_size": 1024, "levels": 1, "code_grid": [8, 8]}
AUDIO_FP = {"codebook_size": 1024, "levels": 4, "frame_rate": 31.25}


def test_parse_codes_layouts_and_checks():
    flat = list(range(64))
    assert requests.parse_codes({"codes": flat}, "image", IMAGE_FP, None, None, "").tolist() == flat
    nested = np.arange(64).reshape(8, 8).tolist()
    assert requests.parse_codes({"codes": nested}, "image", IMAGE_FP, None, None, "").tolist() == flat
    # audio nested as (levels, frames) → frame-major storage layout
    a = np.arange(12).reshape(4, 3)
    got = requests.parse_codes({"codes": a.tolist()}, "audio", AUDIO_FP, None, 10.0, "")
    assert got.tolist() == a.T.reshape(-1).tolist()
    for obj, fp, m in (
        ({"codes": flat[:-1]}, IMAGE_FP, "image"),
        ({"codes": [True] * 64}, IMAGE_FP, "image"),
        ({"codes": [[1, 2], [3]]}, IMAGE_FP, "image"),
        ({"codes": [2**70] * 64}, IMAGE_FP, "image"),
        ({"codes": [-1] + flat[1:]}, IMAGE_FP, "image"),
        ({"codes": list(range(5))}, AUDIO_FP, "audio"),
        ({"codes": np.zeros((3, 4), int).tolist()}, AUDIO_FP, "audio"),
        ({"codes": "0 1 2"}, IMAGE_FP, "image"),
        ({}, IMAGE_FP, "image"),
    ):
        with pytest.raises(ServiceError) as e:
            requests.parse_codes(obj, m, fp, None, 10.0, "")
        assert e.value.status == 400, obj
    with pytest.raises(ServiceError) as e:  # 10 s at 31.25 frames/s is 313 frames
        requests.parse_codes({"codes": [0] * 4 * 314}, "audio", AUDIO_FP, None, 10.0, "")
    assert e.value.status == 413


def test_prepare_request_uses_the_job_reasons(image_codec_dir):
    from PIL import Image

    from trimodal.tokenizers.base import load_tokenizer
    from trimodal.tokenizers.prepare import prepare_params

    tok = load_tokenizer("vqmodel", str(image_codec_dir), max_pixels=100 * 100)
    params = prepare_params("vqmodel", tok)
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (1, 2, 3)).save(buf, format="PNG")
    for data, reason in (
        (buf.getvalue(), "image_too_large"),
        (b"GIF89a junk", "corrupt_image"),
        (b"", "corrupt_image"),
    ):
        with pytest.raises(ServiceError) as e:
            requests.prepare_request("image", "vqmodel", data, "request", params, {})
        assert (e.value.status, e.value.reason) == (422, reason)
    small = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(small, format="PNG")
    px = requests.prepare_request("image", "vqmodel", small.getvalue(), "request", params, {})
    assert len(px) == 64 * 64 * 3


def test_media_payload():
    assert requests.media_payload("audio", (np.zeros(4, np.float32), 8000))["media_type"] == "audio/wav"


def test_bodies_the_client_got_wrong_are_400_not_500():
    # Nested past json's recursion limit: RecursionError, which used to answer 500 internal.
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"\xff\xfe", b"{"):
        with pytest.raises(ServiceError) as e:
            requests.parse_body(body)
        assert (e.value.status, e.value.reason) == (400, "malformed_json"), body[:10]
    assert requests.parse_body(b'{"modality": "text", "data": "x"}') == {"modality": "text", "data": "x"}
    assert [requests.declared_length(h) for h in ("12", None, "\xb2", "-1", "1e3", "")] == [
        12,
        None,
        None,
        None,
        None,
        None,
    ]
    # Parseable but absurd codes: nested past numpy's 64 dimensions, huge, ragged, null.
    fp = {"levels": 1, "codebook_size": 10, "code_grid": [2, 2]}
    deep: list = [1]
    for _ in range(200):
        deep = [deep]
    for codes in (deep, [10**30] * 4, [[1, 2], [3]], [None] * 4, [[[]]]):
        with pytest.raises(ServiceError) as e:
            requests.parse_codes({"codes": codes}, "image", fp, None, None, "")
        assert e.value.status == 400, codes
