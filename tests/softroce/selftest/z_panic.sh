#!/bin/sh
# topology: one
# timeout: 20
# Self-test of the bench: the kernel panics; the host must notice.
echo c >/proc/sysrq-trigger
