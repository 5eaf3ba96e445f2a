# The two commands of the README's quick start. Both set up .venv first (scripts/setup.sh).
.PHONY: setup demo test test-slow notebooks lint bench

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/langevin-images demo --out out/demo --force

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

test-slow: setup
	.venv/bin/python -m pytest -q -m slow

notebooks: setup
	.venv/bin/python scripts/run_notebooks.py --small

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python benchmarks/bench_sampler.py
	.venv/bin/python benchmarks/bench_preconditioning.py
	.venv/bin/python benchmarks/bench_apps.py
	.venv/bin/python benchmarks/bench_warp.py
	.venv/bin/python benchmarks/bench_overhead.py
	.venv/bin/python benchmarks/bench_style.py
	.venv/bin/python benchmarks/bench_amortized.py
	.venv/bin/python benchmarks/bench_study.py
	.venv/bin/python benchmarks/bench_scaling.py
	.venv/bin/python benchmarks/bench_funnel_fallback.py
	.venv/bin/python benchmarks/bench_pictures.py
	.venv/bin/langevin-images bench --suite all --adapt diagonal --adapt lowrank --adapt dense --json benchmarks/results-bench.json
	.venv/bin/langevin-images bench --compiled --target gaussian-100d --target banana --json benchmarks/results-bench-compiled.json
	.venv/bin/langevin-images bench --suite images --compiled --chains 16 --json benchmarks/results-bench-images-compiled.json
