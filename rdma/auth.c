/* SPDX-License-Identifier: MIT */
/*
 * Pre-shared-key authentication: key files, the transcript, HMAC-SHA256
 * proofs and derived lane tokens (rdmae_auth.h).
 */
#include "rdmae_auth.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char label_client[RDMAE_AUTH_LABEL_SIZE] = "rdmae-v2-client";
static const char label_server[RDMAE_AUTH_LABEL_SIZE] = "rdmae-v2-server";
static const char label_lane[RDMAE_AUTH_LABEL_SIZE] = "rdmae-v2-lane";

void rdmae_key_wipe(struct rdmae_key *k)
{
	OPENSSL_cleanse(k, sizeof(*k));
}

int rdmae_key_load(struct rdmae_key *k, const char *path, struct rdmae_err *err)
{
	uint8_t extra;
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd, ret = 0;

	rdmae_key_wipe(k);
	if (!path || !*path)
		return rdmae_err_set(err, -EINVAL, "key file: no file name given");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return rdmae_err_set(err, -errno, "key file %s: %s", path, strerror(errno));
	/* fstat on the open file: what is checked is what is read. */
	if (fstat(fd, &st)) {
		ret = rdmae_err_set(err, -errno, "key file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = rdmae_err_set(err, -EINVAL, "key file %s: not a regular file", path);
		goto out;
	}
	if (st.st_mode & 077) {
		ret = rdmae_err_set(err, -EPERM, "key file %s: group or others have access (mode "
				    "%04o); it must be readable by its owner only (chmod 600)",
				    path, (unsigned int)(st.st_mode & 07777));
		goto out;
	}
	while (got < sizeof(k->bytes)) {
		n = read(fd, k->bytes + got, sizeof(k->bytes) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = rdmae_err_set(err, -errno, "key file %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got == sizeof(k->bytes) && read(fd, &extra, 1) > 0) {
		ret = rdmae_err_set(err, -EINVAL, "key file %s: too long (more than %d bytes)", path,
				    RDMAE_KEY_MAX);
		goto out;
	}
	if (got < RDMAE_KEY_MIN) {
		ret = rdmae_err_set(err, -EINVAL, "key file %s: too short (%zu bytes, at least %d)",
				    path, got, RDMAE_KEY_MIN);
		goto out;
	}
	k->len = got;
out:
	close(fd);
	if (ret)
		rdmae_key_wipe(k);
	return ret;
}

int rdmae_key_set(struct rdmae_key *k, const void *bytes, size_t len, const char *what,
		  struct rdmae_err *err)
{
	rdmae_key_wipe(k);
	if (!bytes)
		return rdmae_err_set(err, -EINVAL, "%s: key: no bytes given (key_len %zu)", what,
				     len);
	if (len > RDMAE_KEY_MAX)
		return rdmae_err_set(err, -EINVAL, "%s: key: too long (%zu bytes, at most %d)",
				     what, len, RDMAE_KEY_MAX);
	if (len < RDMAE_KEY_MIN)
		return rdmae_err_set(err, -EINVAL, "%s: key: too short (%zu bytes, at least %d)",
				     what, len, RDMAE_KEY_MIN);
	memcpy(k->bytes, bytes, len);
	k->len = len;
	return 0;
}

void rdmae_auth_transcript(uint8_t out[RDMAE_AUTH_TRANSCRIPT_SIZE], enum rdmae_auth_role role,
			   const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE],
			   const struct rdmae_neg_req *req, const struct rdmae_neg_resp *resp)
{
	uint8_t q[RDMAE_NEG_REQ_SIZE];
	uint8_t *p = out;

	memcpy(p, role == RDMAE_ROLE_SERVER ? label_server : label_client, RDMAE_AUTH_LABEL_SIZE);
	p += RDMAE_AUTH_LABEL_SIZE;
	memcpy(p, nc, RDMAE_NONCE_SIZE);
	p += RDMAE_NONCE_SIZE;
	memcpy(p, ns, RDMAE_NONCE_SIZE);
	p += RDMAE_NONCE_SIZE;
	/* The parameters as they were on the wire: the fixed part of each message. */
	rdmae_neg_req_encode(q, req);
	memcpy(p, q, RDMAE_NEG_REQ_V1_SIZE);
	p += RDMAE_NEG_REQ_V1_SIZE;
	if (resp) {
		uint8_t r[RDMAE_NEG_RESP_SIZE];

		rdmae_neg_resp_encode(r, resp);
		memcpy(p, r, RDMAE_NEG_RESP_V1_SIZE);
	} else {
		memset(p, 0, RDMAE_NEG_RESP_V1_SIZE);
	}
}

static int hmac(const struct rdmae_key *k, const uint8_t *msg, size_t len,
		uint8_t out[RDMAE_PROOF_SIZE])
{
	static const uint8_t empty;
	unsigned int olen = 0;

	/* An empty key is a valid HMAC key; libcrypto wants a pointer all the same. */
	if (!HMAC(EVP_sha256(), k && k->len ? k->bytes : &empty, k ? (int)k->len : 0, msg, len,
		  out, &olen) || olen != RDMAE_PROOF_SIZE)
		return -EIO;
	return 0;
}

int rdmae_auth_proof(const struct rdmae_key *k, enum rdmae_auth_role role,
		     const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE],
		     const struct rdmae_neg_req *req, const struct rdmae_neg_resp *resp,
		     uint8_t out[RDMAE_PROOF_SIZE])
{
	uint8_t t[RDMAE_AUTH_TRANSCRIPT_SIZE];
	int ret;

	memset(out, 0, RDMAE_PROOF_SIZE);
	if (!k || !k->len)
		return -EINVAL;
	rdmae_auth_transcript(t, role, nc, ns, req, resp);
	ret = hmac(k, t, sizeof(t), out);
	OPENSSL_cleanse(t, sizeof(t));
	return ret;
}

int rdmae_auth_verify(const struct rdmae_key *k, enum rdmae_auth_role role,
		      const uint8_t nc[RDMAE_NONCE_SIZE], const uint8_t ns[RDMAE_NONCE_SIZE],
		      const struct rdmae_neg_req *req, const struct rdmae_neg_resp *resp,
		      const uint8_t proof[RDMAE_PROOF_SIZE])
{
	uint8_t want[RDMAE_PROOF_SIZE];
	int ret = rdmae_auth_proof(k, role, nc, ns, req, resp, want);

	if (!ret && CRYPTO_memcmp(want, proof, sizeof(want)) != 0)
		ret = -EACCES;
	OPENSSL_cleanse(want, sizeof(want));
	return ret ? -EACCES : 0;
}

uint64_t rdmae_auth_lane_token(const struct rdmae_key *k, const uint8_t nc[RDMAE_NONCE_SIZE],
			       const uint8_t ns[RDMAE_NONCE_SIZE], unsigned int lane)
{
	uint8_t m[RDMAE_AUTH_LABEL_SIZE + 2 * RDMAE_NONCE_SIZE + 2];
	uint8_t mac[RDMAE_PROOF_SIZE];
	uint16_t l = htole16((uint16_t)lane);
	uint64_t t = 0;

	memcpy(m, label_lane, RDMAE_AUTH_LABEL_SIZE);
	memcpy(m + RDMAE_AUTH_LABEL_SIZE, nc, RDMAE_NONCE_SIZE);
	memcpy(m + RDMAE_AUTH_LABEL_SIZE + RDMAE_NONCE_SIZE, ns, RDMAE_NONCE_SIZE);
	memcpy(m + sizeof(m) - sizeof(l), &l, sizeof(l));
	if (!hmac(k, m, sizeof(m), mac)) {
		memcpy(&t, mac, sizeof(t));
		t = le64toh(t);
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	/* 0 means "lane 0" in the private data; a failed HMAC must not match anything either. */
	return t ? t : 1;
}

bool rdmae_auth_token_equal(uint64_t a, uint64_t b)
{
	return CRYPTO_memcmp(&a, &b, sizeof(a)) == 0;
}

void rdmae_auth_warm(void)
{
	static const uint8_t nothing;
	uint8_t mac[RDMAE_PROOF_SIZE];

	(void)hmac(NULL, &nothing, 0, mac);
}
