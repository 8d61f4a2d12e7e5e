#!/usr/bin/env bash
# Install the Debian packages the test suite and benchmarks need, if they are missing:
#   ffmpeg     the FFmpeg command line: the independent oracle the detectors are compared with
#   espeak-ng  real speech for the audio and A/V sync tests
#   chromium   headless rendering check of the HTML report
set -euo pipefail
want=(ffmpeg espeak-ng chromium)
missing=()
for pkg in "${want[@]}"; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "avwatch: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "avwatch: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "avwatch: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
