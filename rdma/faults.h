/* SPDX-License-Identifier: MIT */
/*
 * Test-only fault injection, from RDMAE_TEST_FAULTS in the environment of
 * the process that creates the connection. Unset (always, in production)
 * it injects nothing. It exists so that a test can show that a protocol
 * step is needed: with the step skipped and the fault on, the test must
 * fail. Faults only delay or skip; none of them widens what a peer may do.
 *
 *   recv_hold=LANE:MS   each message received on LANE is handed to the
 *                       caller MS ms late (a receiver that lags on a lane)
 *   no_sync_ack         for the caller (rdmae_conn_test_fault): a source
 *                       of the external data path (QEMU multifd) does not
 *                       wait for the per-lane sync acknowledgements (it
 *                       reads them all just before COMPLETE)
 *   recheck             for the engine (external data path): at the commit
 *                       each side also hashes from memory every page it
 *                       kept a sum for, logs (stderr) those that no longer
 *                       match, and fails naming the first: a source page
 *                       changed after its last send without being sent
 *                       again (before COMPLETE, so the source may resume),
 *                       a destination page changed after it was placed
 *                       (COMMIT_FAIL). It only reads memory.
 *
 * Several are separated by commas.
 */
#ifndef RDMAE_FAULTS_H
#define RDMAE_FAULTS_H

#include <stdbool.h>

#include "rdmae_err.h"

struct rdmae_faults {
	unsigned int recv_hold_lane;
	unsigned int recv_hold_ms;	/* 0: no hold */
	bool no_sync_ack;
	bool recheck;
};

/*
 * Parse spec (NULL or "": nothing) into f. -EINVAL naming the bad item
 * and the faults that exist.
 */
int rdmae_faults_parse(const char *spec, struct rdmae_faults *f, struct rdmae_err *err);

#endif
