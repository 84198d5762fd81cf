"""`python bench/x.py` puts bench/ first on sys.path, so a script named like an installed package
shadows it for everything the script imports (bench/tokenizers.py once broke diffusers → peft →
transformers → Hugging Face `tokenizers`). Every script is `bench_<what>.py`, a name no
importable module has."""

import importlib.util
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def test_no_bench_script_shadows_a_module():
    scripts = sorted(p.stem for p in BENCH.glob("*.py"))
    assert scripts, "bench/ has no scripts"
    for name in scripts:
        assert name.startswith("bench_"), f"bench/{name}.py: name bench scripts bench_<what>.py"
        assert importlib.util.find_spec(name) is None, f"bench/{name}.py shadows the module {name!r}"
