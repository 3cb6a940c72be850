#!/bin/sh
# topology: one
# timeout: 20
echo "this test fails on purpose"; exit 3
