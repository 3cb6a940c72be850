#!/bin/sh
# topology: two
# timeout: 15
if [ "$ROLE" = src ]; then echo "src fails at once"; exit 1; fi
bench_sync never 10
