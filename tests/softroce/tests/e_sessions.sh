#!/bin/sh
# topology: one
# timeout: 500
# Four migrations at once in one process pair, and two more process pairs at
# the same time on the same device: each guest verified byte for byte.
set -eu
KEY=$(bench_key)
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7850 --size 32M --sessions 4 --quiet >d4.txt 2>&1 &
d4=$!
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7851 --size 32M --quiet >da.txt 2>&1 &
da=$!
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7852 --size 32M --quiet >db.txt 2>&1 &
db=$!
wait_for listening d4.txt 30; wait_for listening da.txt 30; wait_for listening db.txt 30
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7850 --size 32M --rate 1 --sessions 4 >s4.txt 2>&1 &
s4=$!
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7851 --size 32M --rate 1 >sa.txt 2>&1 &
sa=$!
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7852 --size 32M --rate 1 >sb.txt 2>&1 &
sb=$!
rc=0
for p in $s4 $sa $sb $d4 $da $db; do wait $p || rc=1; done
grep -hE "verified byte for byte|PASS|FAIL" d4.txt da.txt db.txt s4.txt sa.txt sb.txt
[ $rc = 0 ] || { cat s4.txt d4.txt sa.txt da.txt sb.txt db.txt; exit 1; }
n=$(grep -ch "verified byte for byte" d4.txt da.txt db.txt | awk '{s+=$1} END {print s}')
[ "$n" = 6 ] || { echo "$n of 6 guests verified"; exit 1; }
