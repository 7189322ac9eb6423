#!/usr/bin/env bash
# Two routers, one cluster state. 3 nodes (RF 2), two routers on different ports and
# two clients publishing 100 repositories each at once, one through each router: both
# routers list all 200 (no update lost). Two routers publishing one path from two URLs
# at once: both end up showing the same single URL, and a router whose publish lost
# says so; publishing another URL at a published path is refused (naming both URLs and
# --source-id), the same URL refreshes. Drain and failover marks set through one router
# are seen by the other; then that router is killed and a fresh router (no state of its
# own) lists all 200 and reports the drain and failover. With one node down a majority
# still reads and writes; with two down a publish fails with the majority error.
. "$(dirname "$0")/../lib/common.sh"
http_get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())' "$1"; }

# A tiny repository, and a second one with another URL.
for r in one two; do
    git init -q -b main "$E2E_TMP/$r"
    echo "repository $r" > "$E2E_TMP/$r/README"
    git -C "$E2E_TMP/$r" add README
    git -C "$E2E_TMP/$r" -c user.name=t -c user.email=t@e -c commit.gpgsign=false commit -qm "$r"
done
ONE="file://$E2E_TMP/one" TWO="file://$E2E_TMP/two"

ports=($(e2e_free_ports 10))
F=${ports[0]} N1=${ports[1]} N2=${ports[2]} N3=${ports[3]}
PA=${ports[4]} HA=${ports[5]} PB=${ports[6]} HB=${ports[7]} PC=${ports[8]} HC=${ports[9]}
NODES="n1=127.0.0.1:$N1,n2=127.0.0.1:$N2,n3=127.0.0.1:$N3"
for n in 1 2 3; do
    eval "port=\$N$n"
    e2e_bg "$MONOFS_BIN" node --addr "127.0.0.1:$port" --node-id "n$n" --db-path "$E2E_TMP/n$n" --shards 2
    eval "NPID$n=$E2E_BG_PID"
done
e2e_bg "$MONOFS_BIN" fetcher --bind 127.0.0.1 --port "$F" --cache-dir "$E2E_TMP/cache" \
    --prefetch-workers 0 --allow-local-sources
for p in "$N1" "$N2" "$N3" "$F"; do e2e_wait_port "$p" 30; done
router() { # ID NFS_PORT HTTP_PORT
    e2e_bg "$MONOFS_BIN" router --bind 127.0.0.1 --port "$2" --http-port "$3" --router-id "$1" \
        --nodes "$NODES" --replication-factor 2 --fetchers "127.0.0.1:$F"
    e2e_wait_port "$2" 30; e2e_wait_port "$3" 30
}
router ra "$PA" "$HA"; RA_PID=$E2E_BG_PID
router rb "$PB" "$HB"
RA="http://127.0.0.1:$HA" RB="http://127.0.0.1:$HB" RC="http://127.0.0.1:$HC"

e2e_step "two clients publish 100 repositories each at once, through different routers"
publish_100() { # ROUTER PREFIX
    local i
    for i in $(seq -w 0 99); do
        "$MONOFS_BIN" ingest --router "$1" --source-id "local/$2/r$i" "$ONE" >/dev/null 2>>"$E2E_TMP/$2.err" \
            || echo "local/$2/r$i" >>"$E2E_TMP/$2.failed"
    done
}
t0=$(e2e_secs)
publish_100 "$RA" a & CA=$!
publish_100 "$RB" b & CB=$!
wait "$CA" "$CB"
echo "200 publishes in $(awk -v a="$t0" -v b="$(e2e_secs)" 'BEGIN {printf "%.1f", b - a}') s"
e2e_check "every publish succeeded" test ! -e "$E2E_TMP/a.failed" -a ! -e "$E2E_TMP/b.failed"
[ ! -e "$E2E_TMP/a.failed" ] || { head -5 "$E2E_TMP/a.err"; }
expect_200='sorted(r["path"] for r in v) == sorted([f"/local/a/r{i:02d}" for i in range(100)] + [f"/local/b/r{i:02d}" for i in range(100)])'
sleep 1.2 # NS_TTL
for r in "$RA" "$RB"; do
    http_get "$r/api/repos" >"$E2E_TMP/repos.json"
    e2e_check "$r lists all 200 repositories" e2e_json_check "$E2E_TMP/repos.json" "$expect_200"
done
e2e_check "the namespace lists them over NFS" \
    sh -c "test \"\$('$MONOFS_BIN' ls --server 127.0.0.1:$PB /local/a | wc -l)\" = 100"

e2e_step "two routers publish one path from two URLs at once"
set +e
"$MONOFS_BIN" ingest --router "$RA" --source-id local/contested "$ONE" >"$E2E_TMP/ca.out" 2>&1 & P1=$!
"$MONOFS_BIN" ingest --router "$RB" --source-id local/contested "$TWO" >"$E2E_TMP/cb.out" 2>&1 & P2=$!
wait "$P1"; rc1=$?
wait "$P2"; rc2=$?
set -e
echo "through ra ($ONE): exit $rc1; through rb ($TWO): exit $rc2"
tail -n1 "$E2E_TMP/ca.out" "$E2E_TMP/cb.out"
sleep 1.2
urls=""
for r in "$RA" "$RB"; do
    urls+="$(http_get "$r/api/repos" | python3 -c 'import json,sys; print(*[x["url"] for x in json.load(sys.stdin) if x["path"] == "/local/contested"])') "
done
echo "contested path's URL on ra and rb: $urls"
read -r ua ub <<<"$urls"
e2e_check "both routers show one and the same URL" test -n "$ua" -a "$ua" = "$ub"
e2e_check "at least one publish succeeded" test "$rc1" = 0 -o "$rc2" = 0
if [ "$rc1" = 0 ] && [ "$rc2" != 0 ]; then
    e2e_check "the refused one lost to the other's URL" test "$ua" = "$ONE"
elif [ "$rc2" = 0 ] && [ "$rc1" != 0 ]; then
    e2e_check "the refused one lost to the other's URL" test "$ua" = "$TWO"
else
    echo "both were acknowledged: the later write (greater stamp, then router id) was kept: $ua"
fi
loser=$([ "$ua" = "$ONE" ] && echo "$TWO" || echo "$ONE")
set +e
"$MONOFS_BIN" ingest --router "$RA" --source-id local/contested "$loser" >"$E2E_TMP/again.out" 2>&1; rc=$?
set -e
tail -n1 "$E2E_TMP/again.out"
e2e_check "another URL at a published path is refused (exit $rc)" test "$rc" != 0
e2e_check "naming both URLs and --source-id" \
    sh -c "grep -qF -- '$ua' '$E2E_TMP/again.out' && grep -qF -- '$loser' '$E2E_TMP/again.out' && grep -qF -- '--source-id' '$E2E_TMP/again.out'"
e2e_check "the same URL refreshes" "$MONOFS_BIN" ingest --router "$RB" --source-id local/contested "$ua"

e2e_step "drain and failover marks, set through ra, seen by rb"
e2e_check "admin drain" "$MONOFS_BIN" admin drain --router "$RA" --reason "maintenance window"
e2e_check "admin trigger-failover n2" "$MONOFS_BIN" admin trigger-failover --router "$RA" --node-id n2
set +e
"$MONOFS_BIN" admin trigger-failover --router "$RA" --node-id nope 2>"$E2E_TMP/unknown.err"; rc=$?
set -e
cat "$E2E_TMP/unknown.err"
e2e_check "an unknown node id is a usage error (exit $rc)" test "$rc" = 2
e2e_check "naming the node ids" grep -q "unknown node id 'nope'.*n1, n2, n3" "$E2E_TMP/unknown.err"
sleep 1.2
http_get "$RB/api/state" >"$E2E_TMP/state-b.json"; cat "$E2E_TMP/state-b.json"
e2e_check "rb sees the drain, the failover and both routers" e2e_json_check "$E2E_TMP/state-b.json" \
    'v["drain"]["reason"] == "maintenance window" and v["drain"]["by"] == "ra" and v["failovers"]["n2"]["reason"] == "manual" and sorted(r["id"] for r in v["routers"]) == ["ra", "rb"] and v["repos"] == 201'

e2e_step "kill ra; a fresh router takes over"
kill -9 "$RA_PID"
e2e_stop "$RA_PID" 1 || true
router rc "$PC" "$HC"
sleep 1.2
http_get "$RC/api/repos" >"$E2E_TMP/repos-c.json"
e2e_check "the fresh router lists all 200 (and the contested one)" e2e_json_check "$E2E_TMP/repos-c.json" \
    "len(v) == 201 and sorted(r['path'] for r in v if r['path'] != '/local/contested') == sorted([f'/local/a/r{i:02d}' for i in range(100)] + [f'/local/b/r{i:02d}' for i in range(100)])"
http_get "$RC/api/state" >"$E2E_TMP/state-c.json"; cat "$E2E_TMP/state-c.json"
e2e_check "and reports the drain and the failover set before" e2e_json_check "$E2E_TMP/state-c.json" \
    'v["drain"]["reason"] == "maintenance window" and list(v["failovers"]) == ["n2"] and "rc" in [r["id"] for r in v["routers"]]'
gone=no
for _ in $(seq 1 30); do
    if http_get "$RC/api/state" | python3 -c 'import json,sys; sys.exit("ra" in [r["id"] for r in json.load(sys.stdin)["routers"]])'; then
        gone=yes; break
    fi
    sleep 1
done
e2e_check "the dead router leaves the live routers within 3 heartbeats (15 s)" test "$gone" = yes
e2e_check "monofs admin state prints it" sh -c "'$MONOFS_BIN' admin state --router '$RC' | grep -q 'drain: maintenance window'"
e2e_check "admin undrain" "$MONOFS_BIN" admin undrain --router "$RC"
e2e_check "admin clear-failover n2" "$MONOFS_BIN" admin clear-failover --router "$RC" --node-id n2
sleep 1.2
http_get "$RB/api/state" >"$E2E_TMP/state-b2.json"
e2e_check "rb sees both cleared" e2e_json_check "$E2E_TMP/state-b2.json" 'v["drain"] is None and v["failovers"] == {}'

e2e_step "a majority of nodes is enough; less is refused"
e2e_stop "$NPID3" || true
e2e_check "with n3 down, a state change through rc succeeds" "$MONOFS_BIN" admin drain --router "$RC" --reason "n3 down"
sleep 1.2
http_get "$RB/api/state" >"$E2E_TMP/state-b3.json"
e2e_check "and rb reads it, with all 201 repositories" e2e_json_check "$E2E_TMP/state-b3.json" 'v["drain"]["reason"] == "n3 down" and v["repos"] == 201'
e2e_stop "$NPID2" || true
set +e
"$MONOFS_BIN" admin undrain --router "$RC" >"$E2E_TMP/minority.out" 2>&1; rc=$?
set -e
cat "$E2E_TMP/minority.out"
e2e_check "with n2 down too, a state change fails (exit $rc)" test "$rc" = 1
e2e_check "saying a majority is needed" grep -qE "[01] of 3 nodes acknowledged, 2 needed" "$E2E_TMP/minority.out"
sleep 1.2
code=$(python3 -c 'import sys, urllib.request, urllib.error
try: print(urllib.request.urlopen(sys.argv[1], timeout=30).status)
except urllib.error.HTTPError as e: print(e.code)' "$RB/api/repos")
e2e_check "and a namespace read is refused, not answered from a minority (HTTP $code)" test "$code" = 503
e2e_done
