"""The table from a run's own records, without Ray: a trial function run in this process (its
Tune reports go nowhere outside a session) evaluates at `eval.at` and at its end, writes its
rows and done marker; the final evaluation is taken from the summary when metrics.jsonl lacks
it (an s3:// run's uploaded copy); a failing trial leaves error.json; a finished one is not
trained again."""

import json
import os

import pytest

from tests.sweep.conftest import sweep_config
from trimodal.errors import ConfigError, InputError, IntegrityError
from trimodal.sweep.config import load_sweep
from trimodal.sweep.points import StreamStats
from trimodal.sweep.runner import plan, sweep_status
from trimodal.sweep.table import RESULTS_SCHEMA, eval_records, to_table, trial_rows
from trimodal.sweep.trial import DONE, ERROR, ROWS, read_json, read_jsonl, run_trial

# outside a Tune session the trial's reports go nowhere, with a warning
pytestmark = pytest.mark.filterwarnings("ignore:`report` is meant:UserWarning")


@pytest.fixture
def one_point(sweep_data, tmp_path):
    cfg = load_sweep(sweep_config(sweep_data, tmp_path, set={"eval.at": [2]}))
    points, _ = plan(cfg, lambda m, b: StreamStats(100.0, 1000.0, 80))
    p = points[0]
    return cfg, p, {"sweep": cfg.name, "split": cfg.split_name, "point": p.to_json(), "train": p.train, "threads": 1}


def test_trial_writes_rows_at_eval_at_and_the_end(one_point):
    cfg, p, config = one_point
    run_trial(config)
    out = p.train["output"]
    done, rows = read_json(out, DONE), read_json(out, ROWS)
    assert done["step"] == 4 and done["rows"] == len(rows)
    assert sorted({(r["step"], r["final"]) for r in rows}) == [(2, False), (4, True)]
    t = to_table(rows, list(p.shares))
    assert t.schema.names[: len(RESULTS_SCHEMA)] == RESULTS_SCHEMA.names
    at2 = [r for r in rows if r["step"] == 2 and r["group"] == "all"][0]
    at4 = [r for r in rows if r["step"] == 4 and r["group"] == "all"][0]
    assert 0 < at2["tokens"] < at4["tokens"] and at2["flops"] < at4["flops"]
    # the same final rows from the summary alone (an s3:// run's metrics copy lacks the last eval)
    metrics = read_jsonl(os.path.join(out, "metrics.jsonl"))
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    no_final = [r for r in metrics if not (r.get("event") == "eval" and r["step"] == 4)]
    again = trial_rows(cfg.name, p.to_json(), p.train, cfg.split_name, eval_records(no_final, summary), 4)
    key = lambda r: (r["step"], r["group_kind"], r["group"])  # noqa: E731
    assert sorted(again, key=key) == sorted(rows, key=key)
    # a finished trial returns at once: nothing trained, the marker untouched
    before = open(os.path.join(out, "metrics.jsonl")).read()
    run_trial(config)
    assert open(os.path.join(out, "metrics.jsonl")).read() == before and read_json(out, DONE) == done


def test_a_failing_trial_leaves_its_error(one_point, tmp_path):
    cfg, p, config = one_point
    bad = json.loads(json.dumps(config))
    bad["train"]["mix"]["sources"][0]["dataset"] = str(tmp_path / "missing")
    with pytest.raises((InputError, IntegrityError, ConfigError)):
        run_trial(bad)
    err = read_json(p.train["output"], ERROR)
    assert "missing" in err["error"] and read_json(p.train["output"], DONE) is None
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t" / "sweep.json").write_text(json.dumps({"name": "t", "points": [p.to_json()]}))
    st = sweep_status(str(tmp_path / "t"))
    assert st["counts"]["error"] == 1 and "missing" in st["trials"][0]["error"]


def test_budget_trial_spends_its_budget(sweep_data, tmp_path):
    """measure_stream on the real stream, then a budget point trained in this process: the
    run's own FLOPs count lands near C (the measure is a mean over 32 batches)."""
    from trimodal.sweep.points import measure_stream, step_flops_expected

    cfg = load_sweep(sweep_config(sweep_data, tmp_path))
    base = cfg.base_train_dict()
    st = measure_stream(base["mix"], base["logical_batch"])
    assert st.vocab_size > 56 and 0 < st.tokens_per_step <= 4 * 32
    per_step = step_flops_expected(base["model"], st)
    C = 12 * per_step
    budget = load_sweep(sweep_config(sweep_data, tmp_path / "b", budget={"flops": [C], "sizes": ["tiny"]}))
    (p,), dropped = plan(budget)
    assert p.train["steps"] == 12 and not dropped
    run_trial({"sweep": "b", "split": "heldout", "point": p.to_json(), "train": p.train, "threads": 1})
    final = [r for r in read_json(p.train["output"], ROWS) if r["final"] and r["group"] == "all"][0]
    assert final["budget_flops"] == C and abs(final["flops"] - C) / C < 0.03
