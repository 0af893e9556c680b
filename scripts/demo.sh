#!/usr/bin/env bash
# `make demo`: reshard's whole story on a local stack, in a couple of minutes.
#
#   dev stack (PostgreSQL shards + etcd, skewed multi-tenant data) -> rows per shard
#   -> catalog -> fingerprint of every tenant's rows -> live write load -> stats -> plan
#   -> apply -> summary -> every tenant's rows checked (a difference fails the demo) -> dev down
#
# Steps whose command is not in this build yet are skipped with a note. Environment:
#   KEEP=1      leave the stack and the status page running at the end (stop them with:
#               bin/reshard dev down, and kill the page's pid printed at the end)
#   UI_LISTEN=127.0.0.1:8080  where the live status page (reshard ui) listens
#   SHARDS=3    number of shards;  SCALE=1  size of the demo data (1: ~60,000 orders)
#   DISTRIBUTION=range  range: bigint tenant ids, ranges over the ids; hash: uuid tenant ids,
#               ranges over their hash (`reshard dev up --distribution`)
#   DEVDIR=.reshard-dev  the stack's folder;  BIN=bin/reshard  the binary
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/reshard}
DIR=${DEVDIR:-.reshard-dev}
SHARDS=${SHARDS:-3}
SCALE=${SCALE:-1}
DISTRIBUTION=${DISTRIBUTION:-range}
LOAD_PID=""
LOAD_OUT=$(mktemp)
UI_PID=""
UI_LISTEN=${UI_LISTEN:-127.0.0.1:8080}
UI_OUT=$(mktemp)

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
# has CMD...: this build of reshard has the command (cobra prints its usage line).
has() { "$BIN" "$@" --help 2>/dev/null | grep -q "^  reshard $*"; }
# run CMD...: show it, then run it.
run() { printf '$ reshard %s\n' "$*"; "$BIN" "$@"; }

stop_load() {
  if [ -n "$LOAD_PID" ]; then
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
    LOAD_PID=""
  fi
}

cleanup() {
  rc=$?
  if [ -n "$LOAD_PID" ]; then
    stop_load
    say "the write load's summary"
    cat "$LOAD_OUT"
  fi
  rm -f "$LOAD_OUT"
  if [ -n "$UI_PID" ] && [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: the status page keeps running at http://$UI_LISTEN/ (pid $UI_PID, log $UI_OUT; stop it with: kill $UI_PID)"
  elif [ -n "$UI_PID" ]; then
    kill -TERM "$UI_PID" 2>/dev/null || true
    wait "$UI_PID" 2>/dev/null || true
  fi
  [ -n "$UI_PID" ] && [ "${KEEP:-0}" = 1 ] || rm -f "$UI_OUT"
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: the stack keeps running in $DIR (stop it with: $BIN dev down --dir $DIR)"
  elif [ -e "$DIR" ]; then
    say "reshard dev down"
    "$BIN" dev down --dir "$DIR" || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BIN" ] || { echo "demo: $BIN is missing: run make build" >&2; exit 1; }

if [ -e "$DIR" ]; then
  say "a stack is left over in $DIR: removing it"
  "$BIN" dev down --dir "$DIR"
fi

say "reshard dev up: $SHARDS PostgreSQL shards and etcd, skewed demo data ($DISTRIBUTION distribution)"
run dev up --dir "$DIR" --shards "$SHARDS" --scale "$SCALE" --distribution "$DISTRIBUTION"

ENDPOINT=$(sed -n 's/.*"endpoint": "\(.*\)".*/\1/p' "$DIR/state.json")
export RESHARD_ETCD="$ENDPOINT" RESHARD_CLUSTER=demo

rows_per_shard() {
  local name dsn
  while read -r name dsn; do
    echo "-- shard $name"
    psql "$dsn" -X -q -P pager=off -c "
      SELECT (SELECT count(*) FROM tenants) AS tenants, (SELECT count(*) FROM orders) AS orders,
             (SELECT count(*) FROM order_items) AS order_items, (SELECT count(*) FROM ledger) AS ledger,
             (SELECT count(*) FROM events) AS events, pg_size_pretty(pg_database_size(current_database())) AS size" \
      -c "SELECT tenant_id AS biggest_tenants, count(*) AS orders FROM orders GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
  done < <(paste -d' ' <(sed -n 's/^  - name: //p' "$DIR/cluster.yaml") <(sed -n 's/^    dsn: "\(.*\)"$/\1/p' "$DIR/cluster.yaml"))
}

say "rows per shard (psql): the first shard holds the big, busy tenants"
if command -v psql >/dev/null 2>&1; then
  rows_per_shard
else
  echo "(psql is not installed: install postgresql-client to see the row counts)"
  "$BIN" dev status --dir "$DIR"
fi

# ---- the catalog (issue 3) ---------------------------------------------------------------
if has init; then
  say "reshard init: the catalog in etcd"
  run init -f "$DIR/cluster.yaml"
  if has catalog show; then run catalog show; fi
  if has ui; then
    say "reshard ui: the live status page, in the background (it follows the catalog as the demo goes on)"
    printf '$ reshard ui --listen %s &\n' "$UI_LISTEN"
    "$BIN" ui --listen "$UI_LISTEN" >"$UI_OUT" 2>&1 &
    UI_PID=$!
    for _ in $(seq 50); do grep -q 'http://' "$UI_OUT" 2>/dev/null && break; kill -0 "$UI_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$UI_PID" 2>/dev/null; then
      cat "$UI_OUT"
      echo "open http://$UI_LISTEN/ in a browser to watch the moves below live"
    else
      cat "$UI_OUT"
      echo "(the status page did not start: set UI_LISTEN to a free address; the demo goes on without it)"
      UI_PID=""
    fi
  fi
else
  say "(skipped: reshard init is not in this build yet)"
fi

# ---- live write load, stats, plan, apply (issues 3, 4, 6) --------------------------------
CHECK=0
if has stats collect; then
  if has dev check; then
    say "reshard dev check --save: fingerprint every tenant's rows on every shard, before the load and the moves"
    run dev check --dir "$DIR" --save
    CHECK=1
  fi
  say "a live write load on the demo tenants, in the background (routed by the catalog; every third tenant left quiet)"
  "$BIN" dev load --dir "$DIR" --duration 0 --workers 4 --quiet 3 >"$LOAD_OUT" 2>&1 &
  LOAD_PID=$!
  sleep 2

  say "reshard stats collect: sizes, and write rates sampled from the WAL"
  run stats collect --sample-writes 10s
  if has stats show; then run stats show; fi
  if command -v etcdctl >/dev/null 2>&1; then
    say "the catalog's keys in etcd (etcdctl; values are JSON)"
    printf '$ etcdctl get --prefix /reshard/demo/ --keys-only\n'
    ETCDCTL_API=3 etcdctl --endpoints="$RESHARD_ETCD" get --prefix /reshard/demo/ --keys-only | grep -v '^$' \
      | grep -v '/history/' | head -20
    ETCDCTL_API=3 etcdctl --endpoints="$RESHARD_ETCD" get /reshard/demo/ranges/0000000000000000 | tail -1
  fi

  if has plan; then
    say "reshard plan: what to move or split, and why"
    set +e
    run plan --out "$DIR/plan.json" --detailed-exitcode
    plan_rc=$?
    set -e
    if [ "$plan_rc" = 1 ]; then exit 1; fi
    if [ "$plan_rc" = 2 ] && has apply; then
      say "reshard apply: moves under the live load"
      run apply "$DIR/plan.json" --auto-approve
      if has status; then run status; fi
    fi
  fi

  say "the write load's summary (writes retried after meeting a cutover fence count as fenced)"
  stop_load
  cat "$LOAD_OUT"
else
  say "a short live write load on the demo tenants"
  run dev load --dir "$DIR" --duration 5s --workers 4
  say "(skipped: stats collect, plan and apply are not in this build yet)"
fi

say "rows per shard at the end"
if command -v psql >/dev/null 2>&1; then rows_per_shard; else "$BIN" dev status --dir "$DIR"; fi

if [ "$CHECK" = 1 ]; then
  say "reshard dev check: every tenant's rows, moved or not, against the fingerprint and what the load did"
  run dev check --dir "$DIR"
fi
