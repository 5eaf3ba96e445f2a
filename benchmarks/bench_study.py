"""Wall time of one 32-run study on 1 and 2 local workers and on a 2-worker Dask
LocalCluster, side by side in one run (the same study, three fresh output folders), and
whether the three gave the same numbers bit for bit.

The study: class-conditional MNIST, 2 priors x 4 temperatures x 2 samplers x 2 seeds, 3 digits
x 4 chains, 100 warmup + 100 steps each.

Usage: python benchmarks/bench_study.py [--json FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from langevin_images import study as S
from langevin_images.cpu import tune_malloc

CONFIG = {
    "study": {"name": "bench", "model": "mnist", "targets": [1, 3, 7], "chains": 4,
              "steps": 100, "warmup": 100, "seeds": [0, 1]},
    "grid": {"prior": ["fitted=1", "gaussian=1"], "temperature": [0.03, 0.1, 0.3, 1.0],
             "method": ["mala", "ula"]},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results-study.json"))
    parser.add_argument("--out", type=Path, default=Path("out/bench-study"))
    args = parser.parse_args()
    tune_malloc()
    study = S.Study.from_dict(CONFIG)
    n = len(study.points())
    rows = []
    executors = [
        ("1 local worker", {"workers": 1}),
        ("2 local workers", {"workers": 2}),
        ("Dask LocalCluster, 2 workers", {"workers": 2, "scheduler": "local"}),
    ]
    for label, kwargs in executors:
        out = args.out / label.split(",")[0].replace(" ", "-").lower()
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        result = S.run_study(study, out, progress=False, **kwargs)
        seconds = time.perf_counter() - t0
        assert result.complete and not result.failed, result.status
        rows.append({"executor": label, "runs": n, "seconds": round(seconds, 1), "out": str(out)})
        print(f"{label:30s} {seconds:7.1f} s", flush=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_1_worker"] = round(base / r["seconds"], 2)
        r["same_numbers_as_1_worker"] = S.same_numbers(rows[0]["out"], r["out"]) == []
    print(json.dumps(rows, indent=2))
    args.json.write_text(json.dumps({"study": CONFIG, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
