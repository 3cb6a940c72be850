#!/bin/sh
# topology: two
# timeout: 15
# Self-test of the bench: src fails at once, dst waits in vain at a sync.
if [ "$ROLE" = src ]; then echo "src fails at once"; exit 1; fi
bench_sync never 10
