# The two commands of the README: `make serve` and `make test`. Both install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install chromium serve test lint audit model brand-model model-card

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml (torch==2.13.0).
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The browser tests drive Debian's Chromium (no browser download): installed here when missing
# and apt-get may run (as root); otherwise those tests skip, or fail with CI=true.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q chromium; } \
		|| echo "warning: could not install Chromium; the browser tests will skip"

serve: install
	$(VENV)/bin/commentdesk serve

test: install chromium
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

# Known vulnerabilities in the installed dependencies (needs PyPI's JSON API: not run in CI,
# whose registry proxy serves only the package index; see docs/operations.md).
audit: install
	$(VENV)/bin/pip-audit --local --skip-editable --strict --progress-spinner off

# Rebuild the committed models and their model cards from ../shared/data. The served default
# (artifacts/minilm-brand) is the multi-task model with its question head fitted again on
# brand_comments dev too, measured by 5-fold cross-validation (docs/model-card.md).
model: install
	$(VENV)/bin/commentdesk train --config configs/baseline.toml
	$(VENV)/bin/commentdesk train --config configs/multitask.toml
	$(MAKE) brand-model

brand-model: install
	mkdir -p build
	$(VENV)/bin/commentdesk data labels brand_comments/dev --task question --task sentiment -o build/brand-dev-labels.jsonl
	$(VENV)/bin/commentdesk train --feedback build/brand-dev-labels.jsonl --folds 5 --version 0.6.2 --set feedback.encoder_steps=200 \
		--model-dir artifacts/minilm --output-dir artifacts/minilm-brand --out-of-fold build/brand-dev-out-of-fold.jsonl

model-card: install
	$(VENV)/bin/commentdesk evaluate --artifact artifacts/baseline --card docs/model-card-baseline.md
	$(VENV)/bin/commentdesk evaluate --artifact artifacts/minilm-brand --compare artifacts/minilm \
		--compare artifacts/baseline --parity --card docs/model-card.md
