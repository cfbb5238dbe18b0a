# Two commands do everything on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit bench clean translations kiosk-exe

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/comptoir demo --to build/demo --serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: lint typecheck unit

# The portal's messages: extract them, merge them into the .po files (translate what is new,
# then run again), compile the .mo files kept beside them. tests/test_portal_i18n_a11y.py
# fails while a message is missing, untranslated or not compiled.
PORTAL_I18N := portal/translations
translations: setup
	$(BIN)/pybabel extract -F portal/babel.cfg -o $(PORTAL_I18N)/messages.pot -w 100 \
		--no-location --sort-output --project=comptoir --copyright-holder=Comptoir .
	$(BIN)/pybabel update -i $(PORTAL_I18N)/messages.pot -d $(PORTAL_I18N) -w 100 \
		--no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d $(PORTAL_I18N) --statistics

# The kiosk executable, one folder (docs/kiosk.md): build/kiosk/dist/comptoir-kiosk/. Built again
# only when its sources changed.
kiosk-exe: setup
	$(BIN)/python -m kiosk.build

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
