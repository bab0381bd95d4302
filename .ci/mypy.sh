#!/usr/bin/env bash
# mypy on the package as the wheel lays it out. pyproject maps inscope.acquisition,
# inscope.detector and inscope.control to the top-level folders acquisition/, detector/
# and control/ (setuptools package-dir), which mypy cannot follow; so this checks a
# tree of links shaped like the installed package (rebuilt each run, in the ignored
# .mypy_cache/ so its cache stays valid between runs): `mypy -p inscope` there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
tree="$root/.mypy_cache/wheel-tree"
rm -rf "$tree"
mkdir -p "$tree/inscope"
for f in "$root"/inscope/*; do
    [ "$(basename "$f")" = "__pycache__" ] || ln -s "$f" "$tree/inscope/"
done
for sub in acquisition detector control; do
    ln -s "$root/$sub" "$tree/inscope/$sub"
done
cd "$tree"
exec "$py" -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" \
    -p inscope "$@"
