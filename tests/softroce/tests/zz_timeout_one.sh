#!/bin/sh
# topology: one
# timeout: 5
sleep 100 &
echo "sleeping past the timeout"; sleep 100
