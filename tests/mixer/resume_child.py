"""Run in a fresh process by test_resume: load each saved state into a new Mixer (on the given
world size) and print the sha256 of the next global batches, as JSON on stdout."""

import hashlib
import json
import sys

import numpy as np

from trimodal.mixer import Mixer


def digest(parts) -> str:
    h = hashlib.sha256()
    for k in ("tokens", "modality", "segment_ids", "positions"):
        h.update(np.ascontiguousarray(np.concatenate([p[k] for p in parts])).tobytes())
    return h.hexdigest()


def main():
    job = json.load(open(sys.argv[1]))
    out = []
    for case in job["cases"]:
        world = case["world"]
        mixers = []
        for r in range(world):
            m = Mixer(job["cfg"], rank=r, world_size=world)
            m.load_state_dict(case["state"])
            mixers.append(m)
        out.append([digest([next(m) for m in mixers]) for _ in range(job["next"])])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
