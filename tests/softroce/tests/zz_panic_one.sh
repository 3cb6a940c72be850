#!/bin/sh
# topology: one
# timeout: 20
echo c > /proc/sysrq-trigger
