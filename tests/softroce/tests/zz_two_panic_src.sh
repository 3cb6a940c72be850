#!/bin/sh
# topology: two
# timeout: 100
if [ "$ROLE" = src ]; then echo c > /proc/sysrq-trigger; fi
sleep 90
