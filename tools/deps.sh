#!/bin/sh
# Install the Debian packages libpeft needs to build, test and run its demo.
# As root: installs what is missing. Otherwise: prints the apt-get line.
PKGS="build-essential pkg-config libopenblas-dev check zlib1g-dev libcjson-dev fortunes"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all present ($PKGS)"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
else
    echo "deps: missing$missing; run as root:"
    echo "  apt-get install -y$missing"
    exit 1
fi
