#!/usr/bin/env bash
# Build the web book into _build/html, executing every notebook, and fail on any error or warning.
#
#   bash tools/build_book.sh            # fast mode (what CI and the published book use)
#   bash tools/build_book.sh --full     # full mode: paper-scale settings, needs a GPU and hours
#
# Steps:
#   1. fetch the JavaScript the pages load (MathJax 3, require.js, the ipywidgets HTML manager) from the
#      npm registry into book/_static/vendor/ if missing, so that the built book never contacts another host;
#   2. check that every notebook's Colab badge and install cell match _config.yml (tools/colab.py --check);
#   3. `jupyter-book build . --all -W -n --keep-going`: every page is rebuilt and every notebook executed
#      (--all, execute_notebooks: force),
#      a cell that raises is an error (allow_errors: false), and any warning fails the build.
# Environment: DEQLIB_MODE is set to fast (or full with --full); the repository root is put on PYTHONPATH
# so that the notebooks import this checkout's deqlib even when it is not pip-installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=fast
for arg in "$@"; do
  case "$arg" in
    --full) MODE=full ;;
    --fast) MODE=fast ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build_book.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# ---- 1. vendored JavaScript (pinned versions; npm checks each tarball's integrity) -------------------
MATHJAX=mathjax@3.2.2
REQUIREJS=requirejs@2.3.8
WIDGETS=@jupyter-widgets/html-manager@1.0.15
VENDOR=book/_static/vendor
WANT="$MATHJAX $REQUIREJS $WIDGETS"
if [[ "$(cat "$VENDOR/VERSIONS" 2>/dev/null || true)" != "$WANT" ]]; then
  command -v npm >/dev/null || { echo "build_book.sh: npm is needed to fetch $WANT" >&2; exit 1; }
  echo "== fetching $WANT from the npm registry"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$MATHJAX" "$REQUIREJS" "$WIDGETS" >/dev/null)
  rm -rf "$VENDOR"
  mkdir -p "$VENDOR/mathjax" "$VENDOR/html-manager"
  tar xzf "$tmp"/mathjax-*.tgz -C "$VENDOR/mathjax" --strip-components=2 package/es5
  tar xzf "$tmp"/requirejs-*.tgz -C "$tmp" package/require.js
  cp "$tmp/package/require.js" "$VENDOR/require.js"
  # the HTML manager: the AMD bundle and the icon fonts it references (no source maps)
  tar xzf "$tmp"/jupyter-widgets-html-manager-*.tgz -C "$VENDOR/html-manager" --strip-components=2 \
      --exclude='*.map' --exclude='embed.js' --exclude='embed.js.*' --exclude='libembed-amd.js' package/dist
  for f in "$VENDOR/mathjax/tex-chtml.js" "$VENDOR/require.js" "$VENDOR/html-manager/embed-amd.js"; do
    [[ -s "$f" ]] || { echo "build_book.sh: $f missing after unpacking" >&2; exit 1; }
  done
  echo "$WANT" > "$VENDOR/VERSIONS"
fi

# ---- 2. Colab cells up to date ------------------------------------------------------------------
python tools/colab.py --check

# ---- 3. build ----------------------------------------------------------------------------------
export DEQLIB_MODE="$MODE"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
rm -rf _build/html _build/jupyter_execute _build/.doctrees   # no stale page survives a build
start=$(date +%s)
echo "== jupyter-book build (DEQLIB_MODE=$DEQLIB_MODE)"
jupyter-book build . --all --builder html -W -n --keep-going
echo "== built _build/html in $(( $(date +%s) - start )) s"
date -u +%Y-%m-%dT%H:%M:%SZ > _build/html/.build-stamp
