#!/usr/bin/env bash
# Runs a private Apache Airflow (api-server, scheduler, dag-processor) bound to
# 127.0.0.1 until it is told to stop or the process that started it is gone.
#
# Usage: run.sh <venv> <airflow-home> <port> <watch-pid> [cleanup]
#
# <watch-pid> `-` watches nothing: it runs until told to stop (the local stack).
# With `cleanup`, <airflow-home> is removed once everything has stopped.
# Start it as the leader of a new process group: stopping it (SIGTERM to the group, or
# the watched process exiting) stops every Airflow process it started, including task
# processes. Each part logs to <airflow-home>/<part>.log.
set -u
venv="$1" home="$2" port="$3" watch="$4" cleanup="${5:-}"

export AIRFLOW_HOME="$home"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$home/dags"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$port" AIRFLOW__API__BASE_URL="http://127.0.0.1:$port"
export AIRFLOW__API__WORKERS=1
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$home/passwords.json"
export AIRFLOW__API_AUTH__JWT_SECRET="inquest-test-jwt-secret-shared-by-all-parts"
export AIRFLOW__CORE__PARALLELISM=4 AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
export AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL=5
# The venv's bin first: Airflow starts helpers by name.
export PATH="$venv/bin:$PATH"

descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

stop() {
  trap '' TERM INT EXIT
  # Task processes may have left the group: find them through the process tree too.
  local pids
  pids=$(descendants $$)
  kill -TERM -- -$$ $pids 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.5
    pids=$(descendants $$)
    [ -z "$pids" ] && break
  done
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  [ "$cleanup" = cleanup ] && rm -rf "$home"
  kill -KILL -- -$$ 2>/dev/null
  exit 0
}
trap stop TERM INT EXIT

echo '{"admin": "admin"}' > "$home/passwords.json"
if ! airflow db migrate > "$home/migrate.log" 2>&1; then
  echo "airflow db migrate failed; see $home/migrate.log" >&2
  tail -n 40 "$home/migrate.log" >&2
  exit 1
fi
airflow api-server --host 127.0.0.1 --port "$port" > "$home/api-server.log" 2>&1 &
airflow scheduler --skip-serve-logs > "$home/scheduler.log" 2>&1 &
airflow dag-processor > "$home/dag-processor.log" 2>&1 &
echo "started" >&2

# The watchdog: stop when the test process is gone (a `static` is never dropped).
while [ "$watch" = - ] || kill -0 "$watch" 2>/dev/null; do
  sleep 1
done
stop
