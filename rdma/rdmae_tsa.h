/* SPDX-License-Identifier: MIT */
/*
 * Clang's thread-safety analysis (-Wthread-safety, run by `make lint`):
 * function contracts that let the compiler prove a caller holds the lock a
 * function needs. Clang 14 rejects guarded_by on C struct members, so the
 * contracts are on functions only. Under gcc, and wherever the analysis is
 * off, every macro expands to nothing: no code or layout change.
 */
#ifndef RDMAE_TSA_H
#define RDMAE_TSA_H

#if defined(__clang__)
#define RDMAE_TSA(x) __attribute__((x))
#else
#define RDMAE_TSA(x)
#endif

/* A type whose objects are locks the analysis tracks. */
#define RDMAE_CAPABILITY(name) RDMAE_TSA(capability(name))
/* The caller holds the lock, and still holds it on return. */
#define RDMAE_REQUIRES(...) RDMAE_TSA(requires_capability(__VA_ARGS__))
/* The function takes the lock and returns holding it. */
#define RDMAE_ACQUIRE(...) RDMAE_TSA(acquire_capability(__VA_ARGS__))
/* The function releases the lock the caller held. */
#define RDMAE_RELEASE(...) RDMAE_TSA(release_capability(__VA_ARGS__))
/* The caller must not hold the lock: the function takes it itself. */
#define RDMAE_EXCLUDES(...) RDMAE_TSA(locks_excluded(__VA_ARGS__))
/* Tells the analysis the lock is held where it cannot see the caller (callbacks). */
#define RDMAE_ASSERT_HELD(...) RDMAE_TSA(assert_capability(__VA_ARGS__))
/* The analysis is off for this function; the comment beside it says why. */
#define RDMAE_NO_TSA RDMAE_TSA(no_thread_safety_analysis)

#include <pthread.h>

/* A mutex as a lock the analysis tracks (a connection's, a pin cache's). */
typedef pthread_mutex_t rdmae_mutex_t RDMAE_CAPABILITY("mutex");

#endif
