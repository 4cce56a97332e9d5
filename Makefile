# The two commands a user needs: `make up` (a local deployment) and `make test`.
# Both work from nothing: they create .venv, install torch==2.13.0 first,
# install worldstate, and make sure etcd and redis-server binaries exist.
# From PyPI, torch on Linux x86_64 is the CUDA build (several GB of nvidia
# packages, GPU or not); `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# takes the CPU build. Empty: pip's own configuration decides.

PYTHON ?= python3
TORCH_INDEX ?=
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup servers up test bench clean

setup: $(STAMP) servers

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

servers: $(STAMP)
	bash scripts/install-servers.sh $(PY)

up: setup
	$(VENV)/bin/worldstate up $(ARGS)

# Two workers, each with its own deployments, a test file to a worker: most of a test's time is
# waiting on processes it started, so two at once halve the suite (11.4 -> 7.2 min here). Three
# were 17 min against two's 21 with four busy loops on the two cores, but starved a Redis past
# its 2 s socket timeout in the middle of a jepsen run (a 504 where the AP tier must answer).
test: setup
	$(VENV)/bin/pytest -q -n 2 --dist loadfile $(ARGS)

bench: setup
	$(PY) bench/cp.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
