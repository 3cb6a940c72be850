#!/bin/sh
# topology: one
# timeout: 5
# Self-test of the bench: runs past its timeout (and leaves a straggler).
sleep 100 &
echo "sleeping past the timeout"
sleep 100
