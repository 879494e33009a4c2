#!/usr/bin/env bash
# Install Debian's chromium for the report tests (they open the pages in headless Chromium
# through Playwright, which never downloads a browser of its own), when it is missing.
set -euo pipefail
if command -v chromium >/dev/null; then
    echo "chromium-up: $(chromium --version 2>/dev/null | head -n 1)" >&2
    exit 0
fi
echo "chromium-up: installing chromium" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null || { echo "chromium-up: chromium did not install" >&2; exit 1; }
echo "chromium-up: $(chromium --version 2>/dev/null | head -n 1)" >&2
