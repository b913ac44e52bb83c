#!/bin/sh
# Runs settlement transfers through the HTTP API: each debits a wallet in MySQL/MariaDB,
# credits a merchant ledger in PostgreSQL and publishes a settlement message, all in one
# global transaction. Usage: ./transfers.sh [count] (IMAGO_URL, default http://127.0.0.1:8080).
set -eu
url=${IMAGO_URL:-http://127.0.0.1:8080}
count=${1:-10}
curl -fsS -X PUT "$url/v1/topics/settlement.transfers" -H 'Content-Type: application/json' \
  -d '{"partitions": 2}' >/dev/null
run=$(date +%s)
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
  code=$(curl -sS -o /tmp/imago-settlement.out -w '%{http_code}' -X POST "$url/v1/global-transactions" \
    -H 'Content-Type: application/json' -d "$body")
  echo "$id $from -> $to $amount: HTTP $code $(cat /tmp/imago-settlement.out)"
  i=$((i + 1))
done
