#!/usr/bin/env bash
# Installs Debian's headless browser for tests/test_app_browser.py: chromium + chromium-driver.
# Idempotent and quiet; run as root (or with passwordless sudo). Never fails CI: without apt the
# browser test skips and says why.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-setup: apt-get not available; the browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "browser-setup: not root and no passwordless sudo; the browser test will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq >/dev/null \
       && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; then
    echo "browser-setup: could not install chromium/chromium-driver; the browser test will be skipped" >&2
fi
exit 0
