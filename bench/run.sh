#!/usr/bin/env bash
# The gateway benchmark: mxgate against the tutorial's Postfix + PostgreSQL.
#
#   bench/run.sh [--quick]      (as root; --quick finishes in under 5 minutes)
#
# Installs what is missing (Debian: postfix, postfix-pgsql, postgresql-15; the
# venv with mxgate and its bench extras), then runs bench/compare.py, which
# sets up the lab under /tmp/mxgate-bench (MXBENCH_DIR), runs the workloads and
# writes bench/results.json, bench/comparison.png and BENCHMARKS.md.
# Loopback only; every process it starts, it stops. Not part of the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/run.sh: needs root (a Postfix instance, PostgreSQL run as user postgres)" >&2
  exit 1
fi

need=()
command -v smtp-source >/dev/null || need+=(postfix)
[ -e /usr/lib/postfix/postfix-pgsql.so ] || need+=(postfix-pgsql)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v psql >/dev/null || need+=(postgresql-client-15)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Keep the packages' own services from starting: the lab runs private instances.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
  fi
  trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python="${PYTHON:-python3}"
venv="$root/.venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.mxgate-bench-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[test,bench]"
  echo "$want" > "$stamp"
fi
# What the README's commands run: the hot modules compiled (mypyc, from [test]).
"$root/scripts/build-native"

# The gateway itself runs on the distribution's python3 when it has 3.11 or
# newer (what an administrator deploys on: Debian's is built with PGO and LTO
# and linked statically; a default pyenv build, often first on PATH, is
# neither, and serves 6-7% fewer messages per second, BENCHMARKS.md session
# 20), in a venv of its own with the same work tree (editable) and the same
# compiled modules. MXBENCH_PYTHON names another interpreter; set it to
# "$venv/bin/python" to serve on the harness's own.
serve_base="${MXBENCH_PYTHON:-/usr/bin/python3}"
if [ "$serve_base" = "$venv/bin/python" ]; then
  export MXBENCH_SERVE_PYTHON="$venv/bin/python"
elif "$serve_base" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  serve_venv="${MXBENCH_DIR:-/tmp/mxgate-bench}/serve-venv"
  serve_stamp="$serve_venv/.mxgate-installed"
  serve_want="$want $("$serve_base" -c 'import sys; print(sys.version)' | head -1)"
  if [ "$(cat "$serve_stamp" 2>/dev/null)" != "$serve_want" ]; then
    rm -rf "$serve_venv"
    "$serve_base" -m venv "$serve_venv"
    "$serve_venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root"
    echo "$serve_want" > "$serve_stamp"
  fi
  export MXBENCH_SERVE_PYTHON="$serve_venv/bin/python"
else
  echo "bench/run.sh: $serve_base is not a Python 3.11+ with venv: mxgate serves on $venv/bin/python" >&2
  export MXBENCH_SERVE_PYTHON="$venv/bin/python"
fi

exec "$venv/bin/python" "$root/bench/compare.py" "$@"
