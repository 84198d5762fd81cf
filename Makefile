# The two commands the README promises. `make install` installs into the active Python
# environment (use a venv); `make test` runs the whole suite on CPU.
PYTHON ?= python3
DAC_PKGS = descript-audio-codec==1.0.0 descript-audiotools==0.7.2

.PHONY: install test demo bench

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install --no-deps $(DAC_PKGS)
	$(PYTHON) -m pip install -e '.[test]'

test:
	$(PYTHON) -m pytest -q

demo:
	trimodal demo
