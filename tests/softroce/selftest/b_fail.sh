#!/bin/sh
# topology: one
# timeout: 20
# Self-test of the bench: fails with rc 3.
echo "this test fails on purpose"
exit 3
