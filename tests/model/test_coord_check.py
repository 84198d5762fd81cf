"""The coordinate check (model/coord_check.py): after a few AdamW steps at one base lr, the RMS
of every layer's activations stays within a small factor across widths 64 to 512 and depths 2
to 16 under CompleteP, and drifts under the standard parameterization. Measured (6 steps at lr
3e-3, max/min over the 4 shapes): CompleteP ≤ 1.3× on every layer along both axes; standard
67× (width) and 14× (depth) on the last block's output, 3.9× on the logits across widths."""

import pytest

from trimodal.model.coord_check import activation_rms, shape, spread

WIDTHS = (64, 128, 256, 512)  # at depth 2
DEPTHS = (2, 4, 8, 16)  # at width 64
LAYERS = {"embed", "block.mid", "block.last", "hidden", "logits"}


@pytest.fixture(scope="module")
def runs():
    out = {}
    for p in ("standard", "completep"):
        out[p, "width"] = spread([activation_rms(shape(w, 2, p)) for w in WIDTHS])
        out[p, "depth"] = spread([activation_rms(shape(64, d, p)) for d in DEPTHS])
    return out


@pytest.mark.parametrize("axis", ["width", "depth"])
def test_completep_keeps_every_layer_within_a_small_factor(runs, axis):
    s = runs["completep", axis]
    assert set(s) == LAYERS
    assert max(s.values()) < 2.0, s


def test_standard_drifts_with_width_and_depth(runs):
    # hidden updates grow with fan-in; unscaled residual branches add up with depth
    width, depth = runs["standard", "width"], runs["standard", "depth"]
    assert width["block.last"] > 20 and width["logits"] > 2.5, width
    assert depth["block.last"] > 5, depth
