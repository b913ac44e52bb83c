#!/bin/sh
# Runs settlement transfers through the HTTP API: each debits a wallet in MySQL/MariaDB,
# credits a merchant ledger in PostgreSQL and publishes a settlement message, all in one
# global transaction. Usage: ./transfers.sh [count] (IMAGO_URL, default http://127.0.0.1:8080;
# RUN, default the current time: the transfers' ids are settle-$RUN-1, settle-$RUN-2, ...).
#
# A transfer whose answer is lost (connection cut, timeout) or is a 429 or 5xx (503
# outcome_unknown: it may have been applied) is sent again with the SAME id, which returns the
# first outcome and never moves the money twice. Never give a retry a new id. If the outcome
# is still unknown after the attempts, the script stops: run it again with the RUN it prints,
# and the transfers already done answer "duplicate": true instead of running again.
set -eu
url=${IMAGO_URL:-http://127.0.0.1:8080}
count=${1:-10}
run=${RUN:-$(date +%s)}
attempts=${ATTEMPTS:-10}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# send METHOD PATH BODY: sends until the answer is final (not a 429 or 5xx, not lost); prints
# the status code, the body is in $out. Only for requests that are safe to repeat.
send() {
  n=1
  while :; do
    code=$(curl -sS --max-time 30 -o "$out" -w '%{http_code}' -X "$1" "$url$2" \
      -H 'Content-Type: application/json' -d "$3") || code=000
    case $code in
      000 | 429 | 5??) ;;
      *) echo "$code"; return 0 ;;
    esac
    if [ "$n" -ge "$attempts" ]; then
      echo "$code"
      return 1
    fi
    echo "$1 $2: HTTP $code $(cat "$out" 2>/dev/null), outcome unknown: sending it again (attempt $((n + 1)))" >&2
    n=$((n + 1))
    sleep 1
  done
}

code=$(send PUT /v1/topics/settlement.transfers '{"partitions": 2}') || {
  echo "create topic settlement.transfers: HTTP $code $(cat "$out")" >&2
  exit 1
}
i=1
while [ "$i" -le "$count" ]; do
  case $((i % 3)) in 0) from=alice ;; 1) from=bob ;; *) from=carol ;; esac
  to=shop-$((i % 2 + 1))
  amount=$((i * 1000))
  id="settle-$run-$i"   # a retry with the same id returns the first outcome, never a second transfer
  body=$(cat <<JSON
{"id": "$id", "timeout_ms": 10000,
 "steps": [{"resource": "wallet", "operation": "debit",  "params": {"account": "$from", "amount": $amount}},
           {"resource": "ledger", "operation": "credit", "params": {"account": "$to",   "amount": $amount}}],
 "messages": [{"topic": "settlement.transfers", "key": "$from",
               "value": {"transfer": "$id", "from": "$from", "to": "$to", "amount": $amount}}]}
JSON
)
  # 200 committed (or committing: decided, recovery finishes it); 409 rolled_back or
  # rolling_back (nothing moved), in_doubt (half committed: the script stops, exit 2).
  code=$(send POST /v1/global-transactions "$body") || {
    echo "$id $from -> $to $amount: outcome unknown (HTTP $code $(cat "$out")); run again with RUN=$run" >&2
    exit 1
  }
  echo "$id $from -> $to $amount: HTTP $code $(cat "$out")"
  if grep -q '"status": *"in_doubt"' "$out"; then
    # A branch finished against the decision: half committed. Stop for an operator
    # (GET /v1/global-transactions/$id), never send it again under a new id.
    echo "$id: in_doubt: an operator must resolve it (GET /v1/global-transactions/$id); stopping" >&2
    exit 2
  fi
  i=$((i + 1))
done
