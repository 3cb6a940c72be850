/* SPDX-License-Identifier: MIT */
/*
 * The session fuzz_proto decodes engine messages against, shared with the
 * seed generator so that its seeds are valid for it: 2.5 GiB of 4 KiB pages
 * (three 1 GiB descriptors), 1 MiB, and one 2 MiB huge page; as the
 * source sees it, 1 GiB of the first block already advertised (DESCS must
 * go on from there) and nothing of the others.
 */
#ifndef RDMAE_FUZZ_SESSION_H
#define RDMAE_FUZZ_SESSION_H

#include "proto.h"

#define FUZZ_GIB		(1ull << 30)
#define FUZZ_NBLOCKS		3
#define FUZZ_BLOCK_LEN		{ 5 * FUZZ_GIB / 2, 1u << 20, 2u << 20 }
#define FUZZ_BLOCK_PAGES	{ 5 * FUZZ_GIB / 2 / 4096, 256, 1 }
#define FUZZ_BLOCK_PAGE_SIZE	{ 4096, 4096, 2u << 20 }
#define FUZZ_MAX_MSG		(1u << 20)
#define FUZZ_ADVERTISED		{ FUZZ_GIB, 0, 0 }

#endif
