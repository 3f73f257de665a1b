#!/usr/bin/env bash
# Screenshot of a `segkit audit` page in headless Chromium, to look at by eye.
#   scripts/audit_screenshot.sh [AUDIT_DIR] [OUT.png]
# Without AUDIT_DIR, audits a generated dataset with known noise (tests/_synthetic.audit_dataset)
# into a temporary folder first. Needs chromium (apt-get install chromium).
set -euo pipefail
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then echo "chromium not found (apt-get install chromium)" >&2; exit 1; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DIR=${1:-}
SHOT=${2:-audit_page.png}
if [ -z "$DIR" ]; then
  DIR="$WORK/audit"
  "$PY" - "$WORK" "$(cd "$(dirname "$0")/.." && pwd)" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[2])  # the checkout: the audit's dataset is a test generator
import segkit
from tests._synthetic import audit_dataset
root = sys.argv[1]
gt, clean, images, store = audit_dataset(f"{root}/data", 12)
print(segkit.audit([store], gt, f"{root}/audit", images=images, top=6, workers=1, progress=False))
PYEOF
fi
"$BROWSER" --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
  --disable-component-update --disable-sync --user-data-dir="$WORK/profile" \
  --screenshot="$SHOT" --window-size=1280,1400 "file://$(realpath "$DIR")/index.html" 2>/dev/null
echo "screenshot: $SHOT"
