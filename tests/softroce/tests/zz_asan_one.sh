#!/bin/sh
# topology: one
# timeout: 120
set -eu
which verbs_reg1g
verbs_reg1g 1024
