# The two commands a fresh machine needs (see README.md):
#   make serve   - serve the example Flask app on 127.0.0.1:8000
#   make test    - run every test (Rust unit + integration, Python worker, benchmark harness)
# Both create the project-local .venv with Flask first.
# To install: make wheel builds dist/ferrocorn-VERSION-*.whl (the binary only; README "Install").

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.flask-installed

BUILD_VENV  := .venv-build
BUILD_STAMP := $(BUILD_VENV)/.maturin-installed

# gevent for the -k gevent tests: the user's dependency, never ferrocorn's,
# so it lives in a venv of its own (.venv stays without it).
GEVENT_VENV  := .venv-gevent
GEVENT_STAMP := $(GEVENT_VENV)/.gevent-installed

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.servers-gevent-installed

.PHONY: serve test wheel bench bench-containment bench-boot bench-memory bench-precision sweep

$(STAMP):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check flask
	touch $(STAMP)

$(GEVENT_STAMP):
	python3 -m venv $(GEVENT_VENV)
	$(GEVENT_VENV)/bin/pip install --quiet --disable-pip-version-check flask gevent
	touch $(GEVENT_STAMP)

serve: $(STAMP)
	cargo build --release
	./target/release/ferrocorn -w 2 --threads 2 -b 127.0.0.1:8000 --python $(PYTHON) examples.flask_app:app

TEST_PYTHONS := FERROCORN_TEST_PYTHON=$(abspath $(PYTHON)) FERROCORN_TEST_GEVENT_PYTHON=$(abspath $(GEVENT_VENV)/bin/python)

test: $(STAMP) $(GEVENT_STAMP)
	$(PYTHON) -m unittest discover -s python/tests
	$(PYTHON) -m unittest discover -s benches -p "test_*.py"
	$(TEST_PYTHONS) cargo test
	# Again on a master of two threads (the default here is one): the same rules must hold.
	$(TEST_PYTHONS) FERROCORN_TEST_MASTER_THREADS=2 cargo test --test it

# maturin's "bin" bindings (pyproject.toml): the binary built with Cargo.toml's
# dist profile (release, stripped; no --release, which would override it),
# packed as a wheel that pip installs into a virtualenv's bin/. Old wheels go
# first, so dist/ferrocorn-*.whl names one file.
$(BUILD_STAMP):
	python3 -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install --quiet --disable-pip-version-check "maturin>=1.5,<2"
	touch $(BUILD_STAMP)

wheel: $(BUILD_STAMP)
	rm -f dist/ferrocorn-*.whl
	$(BUILD_VENV)/bin/maturin build --out dist

bench:
	bash benches/run.sh

# a leaking Flask app under paced load: no limit, max-requests, max-memory, next to gunicorn (~6 min)
bench-containment:
	bash benches/run.sh --containment

# worker boot cost: fresh interpreter, forked, forked --preload; kill -9 replacement next to gunicorn (~15 s)
bench-boot:
	bash benches/run.sh --boot

# PSS/USS per worker and the server's total, -w 4 and 8, with and without --preload, next to gunicorn (~25 s)
bench-memory:
	bash benches/run.sh --memory

# requests served by each retired worker under --max-requests 20 --max-requests-jitter 10, next to gunicorn (~1 min)
bench-precision:
	bash benches/run.sh --precision

# Comparison servers for sweeps that have gunicorn or flask rows; never
# dependencies of ferrocorn. (gunicorn's gevent worker imports packaging
# without declaring it.)
$(BENCH_STAMP):
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check flask gunicorn granian gevent packaging
	touch $(BENCH_STAMP)

# make sweep SWEEP=configs/sweeps/cpu-levels.toml [SWEEP_ARGS="--out DIR"]
sweep: $(STAMP) $(BENCH_STAMP)
	cargo build --release
	./target/release/ferrocorn sweep $(SWEEP) $(SWEEP_ARGS)
