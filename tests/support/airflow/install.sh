#!/usr/bin/env bash
# Installs Apache Airflow into a cached venv, once per machine.
# Usage: install.sh <cache-dir>   (e.g. ~/.cache/inquest/airflow-3.3.2)
# The venv is complete only when <cache-dir>/venv/.installed exists; a lock keeps
# concurrent test processes from installing twice.
set -euo pipefail
version="${AIRFLOW_VERSION:-3.3.2}"
cache="${1:?cache dir}"
mkdir -p "$cache"
exec 9>"$cache/install.lock"
flock 9
venv="$cache/venv"
if [ -f "$venv/.installed" ]; then
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "apache-airflow==$version"
touch "$venv/.installed"
