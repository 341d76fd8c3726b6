# The two commands of the README:
#   make demo   set up .venv and reconstruct the bundled sample scene (writes demo_out/)
#   make test   set up .venv (bpy 4.5) and .venv-bpy50 (bpy 5.0) and run the tests
PYTHON ?= python3
VENV := .venv
VENV50 := .venv-bpy50

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements-dev.txt
	touch $@

$(VENV50)/.installed: requirements-bpy50.txt
	$(PYTHON) -m venv $(VENV50)
	$(VENV50)/bin/python -m pip install -q --upgrade pip
	$(VENV50)/bin/python -m pip install -q -r requirements-bpy50.txt
	touch $@

.PHONY: setup test test-core test-bpy50 demo
setup: $(VENV)/.installed

test: test-core test-bpy50

test-core: $(VENV)/.installed
	timeout 1800 $(VENV)/bin/python -m pytest tests

test-bpy50: $(VENV50)/.installed
	timeout 900 $(VENV50)/bin/python -m pytest tests/blender

# `make zips`: one extension zip per platform in dist/, built and validated with Blender's own
# builder, wheels from wheels/requirements.txt bundled (downloads them: needs network).
# `make zips TORCH_BUNDLE=1` also bundles the CPU build of torch (zips in dist/torch/).
.PHONY: zips
zips: $(VENV)/.installed
	$(VENV)/bin/python wheels/build.py $(if $(TORCH_BUNDLE),--torch-bundle)

# The demo: reconstruct the bundled sample scene with the default (classical) backend; writes
# demo_out/scene.blend and demo_out/preview.png and prints the camera errors against its truth.
# Measured: 1 min 23-29 s on 2 otherwise idle CPU cores (much longer when other work shares them).
SAMPLE := tests/data/sample_scene
demo: $(VENV)/.installed
	timeout 3600 $(VENV)/bin/python operators/cli.py --images $(SAMPLE)/images \
		--truth $(SAMPLE)/gt.json --out demo_out/scene.blend --preview demo_out/preview.png \
		--cache-dir demo_out/cache
