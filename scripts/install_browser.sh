#!/usr/bin/env bash
# The headless browser the app's browser test drives: Debian's chromium + chromium-driver.
# Installs them when missing and this user may (root with apt-get); otherwise says why the test will skip.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver for the browser test (apt-get)..."
  if apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; then
    exit 0
  fi
  echo "note: apt-get could not install chromium; the browser test will be skipped"
else
  echo "note: no chromium/chromedriver and no root apt-get; the browser test will be skipped (sudo apt-get install chromium chromium-driver)"
fi
exit 0
