import pytest

from trimodal.errors import QUARANTINE_REASONS, SampleError, check_reason


def test_sample_error_takes_a_registered_reason():
    e = SampleError("corrupt_image", "x.jpg: does not decode")
    assert (e.reason, str(e)) == ("corrupt_image", "x.jpg: does not decode")
    assert isinstance(e, ValueError)


def test_sample_error_refuses_an_unknown_reason():
    """A reason the registry does not list is a code bug, refused where it is made."""
    assert "non_utf8" not in QUARANTINE_REASONS
    with pytest.raises(AssertionError, match="non_utf8"):
        SampleError("non_utf8", "doc 3: bad bytes")
    with pytest.raises(AssertionError):
        check_reason("no_such_reason")
    assert check_reason("invalid_utf8") == "invalid_utf8"
