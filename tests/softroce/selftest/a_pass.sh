#!/bin/sh
# topology: one
# timeout: 20
# Self-test of the bench: passes (and wait_for / bench_wait_listen work).
set -eu
(sleep 1; echo listening >s.txt; exec nc -l -p 7777 </dev/null >/dev/null) &
wait_for listening s.txt 10
bench_wait_listen 7777 10
echo "a_pass: helpers work"
