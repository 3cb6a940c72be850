#!/bin/sh
# topology: one
# timeout: 5
sleep 3
