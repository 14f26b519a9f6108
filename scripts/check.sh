#!/usr/bin/env bash
# Everything CI checks, in order of cost; the first failure stops it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy app migrations bench tests
echo "== import contracts"
lint-imports
echo "== public contracts (openapi.json, schema.graphql)"
python -m app.contracts --check
echo "== tests"
pytest -q "$@"
