/* SPDX-License-Identifier: MIT */
/*
 * Authentication without hardware: HMAC-SHA256 against RFC 4231, the
 * transcript's layout, proofs that hold only for their key, role, nonces
 * and parameters, derived lane tokens, the accept private data, and the
 * key file checks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "internal.h"
#include "rdmae_auth.h"
#include "rdmae_wire.h"

static void key_of(struct rdmae_key *k, const char *s)
{
	memset(k, 0, sizeof(*k));
	k->len = strlen(s);
	memcpy(k->bytes, s, k->len);
}

static struct rdmae_neg_req a_req(void)
{
	struct rdmae_neg_req r = {
		.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION,
		.credits_requested = 255, .credits_granted = 254, .lanes = 4,
		.auth = RDMAE_WIRE_AUTH_HMAC_SHA256, .preferred_send_size = 8192,
		.max_receive_size = 8192, .max_fragmented_size = 32u << 20, .max_rw_size = 1u << 20,
	};
	unsigned int i;

	for (i = 0; i < RDMAE_NONCE_SIZE; i++)
		r.nonce[i] = (uint8_t)(0xc0 + i);
	return r;
}

static struct rdmae_neg_resp a_resp(void)
{
	struct rdmae_neg_resp r = {
		.min_version = RDMAE_VERSION, .max_version = RDMAE_VERSION,
		.negotiated_version = RDMAE_VERSION, .credits_requested = 255,
		.credits_granted = 255, .lanes = 4, .max_rw_size = 1u << 20,
		.preferred_send_size = 8192, .max_receive_size = 8192,
		.max_fragmented_size = 32u << 20, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256,
	};

	return r;
}

static const uint8_t nc[RDMAE_NONCE_SIZE] = { 0xc0, 0xc1, 0xc2, [31] = 0xdf };
static const uint8_t ns[RDMAE_NONCE_SIZE] = { 0x50, 0x51, [31] = 0x5f };

/*
 * A proof is HMAC-SHA256(key, transcript), checked against libcrypto's HMAC,
 * which is itself checked against RFC 4231 test case 2 first.
 */
static void test_proof_is_hmac_sha256(void **state)
{
	static const uint8_t rfc[32] = {
		0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26,
		0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83,
		0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
	};
	static const char data[] = "what do ya want for nothing?";
	struct rdmae_key k;
	struct rdmae_neg_req req = a_req();
	struct rdmae_neg_resp resp = a_resp();
	uint8_t t[RDMAE_AUTH_TRANSCRIPT_SIZE], want[32], p[RDMAE_PROOF_SIZE];
	unsigned int len = 0;

	(void)state;
	assert_non_null(HMAC(EVP_sha256(), "Jefe", 4, (const uint8_t *)data, strlen(data), want,
			     &len));
	assert_int_equal(len, 32);
	assert_memory_equal(want, rfc, 32);

	key_of(&k, "Jefe-but-longer-than-16");
	rdmae_auth_transcript(t, RDMAE_ROLE_SERVER, nc, ns, &req, &resp);
	assert_non_null(HMAC(EVP_sha256(), k.bytes, (int)k.len, t, sizeof(t), want, &len));
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	assert_memory_equal(p, want, sizeof(p));
}

/* Warming libcrypto up changes nothing a proof or token depends on, however often it runs. */
static void test_warm(void **state)
{
	struct rdmae_key k;
	struct rdmae_neg_req req = a_req();
	uint8_t before[RDMAE_PROOF_SIZE], after[RDMAE_PROOF_SIZE];
	uint64_t token;

	(void)state;
	key_of(&k, "Jefe-but-longer-than-16");
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, before), 0);
	token = rdmae_auth_lane_token(&k, nc, ns, 1);
	rdmae_auth_warm();
	rdmae_auth_warm();
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, after), 0);
	assert_memory_equal(before, after, sizeof(after));
	assert_true(rdmae_auth_lane_token(&k, nc, ns, 1) == token);
}

static void test_transcript_layout(void **state)
{
	struct rdmae_neg_req req = a_req();
	struct rdmae_neg_resp resp = a_resp();
	uint8_t t[RDMAE_AUTH_TRANSCRIPT_SIZE], q[RDMAE_NEG_REQ_SIZE], r[RDMAE_NEG_RESP_SIZE];
	uint8_t zero[RDMAE_NEG_RESP_V1_SIZE] = { 0 };

	(void)state;
	assert_int_equal(RDMAE_AUTH_TRANSCRIPT_SIZE, 160);
	rdmae_neg_req_encode(q, &req);
	rdmae_neg_resp_encode(r, &resp);

	rdmae_auth_transcript(t, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL);
	assert_memory_equal(t, "rdmae-v2-client\0", 16);
	assert_memory_equal(t + 16, nc, 32);
	assert_memory_equal(t + 48, ns, 32);
	assert_memory_equal(t + 80, q, 32);
	assert_memory_equal(t + 112, zero, 48);

	rdmae_auth_transcript(t, RDMAE_ROLE_SERVER, nc, ns, &req, &resp);
	assert_memory_equal(t, "rdmae-v2-server\0", 16);
	assert_memory_equal(t + 80, q, 32);
	assert_memory_equal(t + 112, r, 48);

	/* The proof fields are not part of what they prove. */
	memset(req.proof, 0xaa, sizeof(req.proof));
	memset(resp.proof, 0xbb, sizeof(resp.proof));
	{
		uint8_t t2[RDMAE_AUTH_TRANSCRIPT_SIZE];

		rdmae_auth_transcript(t2, RDMAE_ROLE_SERVER, nc, ns, &req, &resp);
		assert_memory_equal(t, t2, sizeof(t));
	}
}

static void test_proof_verifies(void **state)
{
	struct rdmae_key k;
	struct rdmae_neg_req req = a_req();
	struct rdmae_neg_resp resp = a_resp();
	uint8_t p[RDMAE_PROOF_SIZE];

	(void)state;
	key_of(&k, "0123456789abcdef-shared");
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	/* Through the wire and back. */
	{
		uint8_t buf[RDMAE_NEG_RESP_SIZE];
		struct rdmae_neg_resp rx;
		enum rdmae_wire_field f;

		memcpy(resp.proof, p, sizeof(p));
		rdmae_neg_resp_encode(buf, &resp);
		assert_int_equal(rdmae_neg_resp_decode(buf, sizeof(buf), &rx, &f), 0);
		assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &rx,
						   rx.proof), 0);
	}
}

static void test_proof_rejects(void **state)
{
	struct rdmae_key k, other;
	struct rdmae_neg_req req = a_req();
	struct rdmae_neg_resp resp = a_resp();
	uint8_t p[RDMAE_PROOF_SIZE], n2[RDMAE_NONCE_SIZE];
	unsigned int i;

	(void)state;
	key_of(&k, "0123456789abcdef-shared");
	key_of(&other, "0123456789abcdef-sharee");
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);

	/* Another key. */
	assert_int_equal(rdmae_auth_verify(&other, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p),
			 -EACCES);
	/* Reflected: the client's proof is no server proof. */
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_SERVER, nc, ns, &req, NULL, p), -EACCES);
	/* Replayed into another connection: another nonce on either side. */
	memcpy(n2, ns, sizeof(n2));
	n2[7] ^= 1;
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, n2, &req, NULL, p), -EACCES);
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, n2, ns, &req, NULL, p), -EACCES);
	/* Nonces swapped. */
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, ns, nc, &req, NULL, p), -EACCES);
	/* Any bit of the proof. */
	for (i = 0; i < RDMAE_PROOF_SIZE * 8; i += 13) {
		p[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p),
				 -EACCES);
		p[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	/* Parameters changed on the path. */
	req.lanes = 3;
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), -EACCES);
	req = a_req();
	req.max_rw_size = 4096;
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), -EACCES);
	req = a_req();
	req.auth = RDMAE_WIRE_AUTH_NONE;
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), -EACCES);
	/* The server's proof covers its response too. */
	req = a_req();
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	resp.lanes = 1;
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), -EACCES);
	resp = a_resp();
	resp.credits_granted = 4096;
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), -EACCES);
	/* No key proves nothing and verifies nothing. */
	memset(&other, 0, sizeof(other));
	assert_int_equal(rdmae_auth_proof(&other, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p),
			 -EINVAL);
	assert_int_equal(rdmae_auth_verify(&other, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p),
			 -EACCES);
}

static void test_lane_tokens(void **state)
{
	struct rdmae_key k, other, none;
	uint8_t n2[RDMAE_NONCE_SIZE];
	uint64_t t[RDMAE_MAX_LANES];
	unsigned int i, j;

	(void)state;
	key_of(&k, "0123456789abcdef-shared");
	key_of(&other, "another key entirely");
	memset(&none, 0, sizeof(none));
	for (i = 1; i < RDMAE_MAX_LANES; i++) {
		t[i] = rdmae_auth_lane_token(&k, nc, ns, i);
		assert_true(t[i] != 0);
		/* Both sides derive the same one. */
		assert_true(rdmae_auth_token_equal(t[i], rdmae_auth_lane_token(&k, nc, ns, i)));
		for (j = 1; j < i; j++)
			assert_false(rdmae_auth_token_equal(t[i], t[j]));
		assert_false(rdmae_auth_token_equal(t[i], rdmae_auth_lane_token(&other, nc, ns, i)));
		assert_false(rdmae_auth_token_equal(t[i], rdmae_auth_lane_token(&none, nc, ns, i)));
	}
	memcpy(n2, nc, sizeof(n2));
	n2[0] ^= 0x80;
	assert_false(rdmae_auth_token_equal(t[1], rdmae_auth_lane_token(&k, n2, ns, 1)));
	assert_false(rdmae_auth_token_equal(t[1], rdmae_auth_lane_token(&k, nc, n2, 1)));
	/* auth=none still yields usable, non-zero tokens. */
	assert_true(rdmae_auth_lane_token(&none, nc, ns, 1) != 0);
	assert_true(rdmae_auth_lane_token(NULL, nc, ns, 1) ==
		    rdmae_auth_lane_token(&none, nc, ns, 1));
}

static void test_accept_pd(void **state)
{
	struct rdmae_accept_pd p = { .version = RDMAE_VERSION, .auth = RDMAE_WIRE_AUTH_HMAC_SHA256 };
	struct rdmae_accept_pd out;
	uint8_t raw[56];
	enum rdmae_wire_field f;

	(void)state;
	memcpy(p.nonce, ns, sizeof(p.nonce));
	memset(raw, 0, sizeof(raw));	/* rdma_cm pads with zeros */
	rdmae_accept_pd_encode(raw, &p);
	assert_memory_equal(raw, "RDME", 4);
	assert_int_equal(raw[4], RDMAE_VERSION & 0xff);
	assert_int_equal(raw[5], RDMAE_VERSION >> 8);
	assert_int_equal(raw[6], 0x01);
	assert_int_equal(raw[7], 0x00);
	assert_memory_equal(raw + 16, ns, 32);
	memset(&out, 0, sizeof(out));
	assert_int_equal(rdmae_accept_pd_decode(raw, sizeof(raw), &out, &f), 0);
	assert_int_equal(out.version, RDMAE_VERSION);
	assert_int_equal(out.auth, RDMAE_WIRE_AUTH_HMAC_SHA256);
	assert_memory_equal(out.nonce, ns, sizeof(ns));
	/* A version-1 server's 16-byte lane private data carries no nonce. */
	assert_int_equal(rdmae_accept_pd_decode(raw, RDMAE_LANE_PD_SIZE, &out, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_LENGTH);
	assert_int_equal(rdmae_accept_pd_decode(NULL, 0, &out, &f), -EBADMSG);
	raw[8] = 1;
	assert_int_equal(rdmae_accept_pd_decode(raw, sizeof(raw), &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_RESERVED);
	raw[8] = 0;
	raw[6] = 9;
	assert_int_equal(rdmae_accept_pd_decode(raw, sizeof(raw), &out, &f), -EPROTO);
	assert_int_equal(f, RDMAE_F_AUTH);
	raw[6] = 1;
	raw[1] = 'x';
	assert_int_equal(rdmae_accept_pd_decode(raw, sizeof(raw), &out, &f), -EBADMSG);
	assert_int_equal(f, RDMAE_F_MAGIC);
}

static char dir[] = "/tmp/rdmae-test-auth-XXXXXX";

static const char *write_file(const char *name, const char *content, size_t len, mode_t mode)
{
	static char path[128];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(content, 1, len, fp), len);
	fclose(fp);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static void test_key_file(void **state)
{
	struct rdmae_key k;
	struct rdmae_err e;
	char big[RDMAE_KEY_MAX + 1];
	const char *p;

	(void)state;
	assert_non_null(mkdtemp(dir));

	p = write_file("good", "0123456789abcdef\n", 17, 0600);
	memset(&e, 0, sizeof(e));
	assert_int_equal(rdmae_key_load(&k, p, &e), 0);
	assert_int_equal(k.len, 17);
	assert_memory_equal(k.bytes, "0123456789abcdef\n", 17);
	p = write_file("ro", "0123456789abcdef", 16, 0400);
	assert_int_equal(rdmae_key_load(&k, p, &e), 0);
	assert_int_equal(k.len, 16);

	p = write_file("group", "0123456789abcdef", 16, 0640);
	assert_int_equal(rdmae_key_load(&k, p, &e), -EPERM);
	assert_non_null(strstr(e.msg, p));
	assert_non_null(strstr(e.msg, "group or others have access (mode 0640)"));
	assert_int_equal(k.len, 0);
	p = write_file("others", "0123456789abcdef", 16, 0604);
	assert_int_equal(rdmae_key_load(&k, p, &e), -EPERM);
	p = write_file("gw", "0123456789abcdef", 16, 0620);
	assert_int_equal(rdmae_key_load(&k, p, &e), -EPERM);

	p = write_file("short", "0123456789abcde", 15, 0600);
	assert_int_equal(rdmae_key_load(&k, p, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "too short (15 bytes, at least 16)"));
	p = write_file("empty", "", 0, 0600);
	assert_int_equal(rdmae_key_load(&k, p, &e), -EINVAL);

	memset(big, 'k', sizeof(big));
	p = write_file("long", big, RDMAE_KEY_MAX, 0600);
	assert_int_equal(rdmae_key_load(&k, p, &e), 0);
	assert_int_equal(k.len, RDMAE_KEY_MAX);
	p = write_file("toolong", big, sizeof(big), 0600);
	assert_int_equal(rdmae_key_load(&k, p, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "too long"));

	assert_int_equal(rdmae_key_load(&k, "/nonexistent/rdmae.key", &e), -ENOENT);
	assert_non_null(strstr(e.msg, "key file /nonexistent/rdmae.key: "));
	assert_int_equal(rdmae_key_load(&k, dir, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "not a regular file"));
	assert_int_equal(rdmae_key_load(&k, NULL, &e), -EINVAL);

	rdmae_key_wipe(&k);
	assert_int_equal(k.len, 0);
	{
		static const char *const names[] = { "good", "ro", "group", "others", "gw", "short",
						     "empty", "long", "toolong" };
		char path[128];
		unsigned int i;

		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
			unlink(path);
		}
		rmdir(dir);
	}
}

/*
 * The key as bytes (rdmae_conn_opts.key, E1): the same rules as a key
 * file, never together with one or with auth=none, and a side that took
 * its key as bytes authenticates a peer that read the same bytes from a
 * file, and only such a peer.
 */
static void test_key_bytes(void **state)
{
	static const char secret[] = "0123456789abcdef-from-a-secret";
	struct rdmae_neg_req req = a_req();
	struct rdmae_neg_resp resp = a_resp();
	struct rdmae_conn_opts o;
	struct rdmae_key k, kf, other;
	struct rdmae_err e;
	uint8_t p[RDMAE_PROOF_SIZE], big[RDMAE_KEY_MAX + 1];
	char path[128];

	(void)state;
	rdmae_conn_opts_default(&o);
	o.key = secret;
	o.key_len = strlen(secret);
	memset(&e, 0, sizeof(e));
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "connection to x:1", &e), 0);
	assert_int_equal(k.len, strlen(secret));
	assert_memory_equal(k.bytes, secret, k.len);

	/* The same bytes from a file: each side's proof checks at the other. */
	snprintf(dir, sizeof(dir), "/tmp/rdmae-test-auth-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s", write_file("same", secret, strlen(secret), 0600));
	assert_int_equal(rdmae_key_load(&kf, path, &e), 0);
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	assert_int_equal(rdmae_auth_verify(&kf, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	assert_int_equal(rdmae_auth_proof(&kf, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	assert_int_equal(rdmae_auth_verify(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	/* Other bytes: refused both ways. */
	o.key = "0123456789abcdef-another-secret";
	o.key_len = strlen(o.key);
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &other, "listener *:1", &e), 0);
	assert_int_equal(rdmae_auth_proof(&other, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	assert_int_not_equal(rdmae_auth_verify(&k, RDMAE_ROLE_CLIENT, nc, ns, &req, NULL, p), 0);
	assert_int_equal(rdmae_auth_proof(&k, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p), 0);
	assert_int_not_equal(rdmae_auth_verify(&other, RDMAE_ROLE_SERVER, nc, ns, &req, &resp, p),
			     0);

	/* Both a key and a key file: named, nothing loaded. */
	o.key_file = path;
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "connection to x:1", &e), -EINVAL);
	assert_non_null(strstr(e.msg, "connection to x:1: both a key ("));
	assert_non_null(strstr(e.msg, path));
	assert_int_equal(k.len, 0);
	o.key_file = NULL;
	o.auth_none = true;
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "listener *:1", &e), -EINVAL);
	assert_non_null(strstr(e.msg, "both a key (31 bytes) and auth=none"));
	o.auth_none = false;

	/* Lengths as for a key file, and the owner named. */
	o.key = secret;
	o.key_len = 15;
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "listener *:1", &e), -EINVAL);
	assert_non_null(strstr(e.msg, "listener *:1: key: too short (15 bytes, at least 16)"));
	assert_int_equal(k.len, 0);
	memset(big, 'k', sizeof(big));
	o.key = big;
	o.key_len = RDMAE_KEY_MAX;
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "listener *:1", &e), 0);
	assert_int_equal(k.len, RDMAE_KEY_MAX);
	o.key_len = sizeof(big);
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "listener *:1", &e), -EINVAL);
	assert_non_null(strstr(e.msg, "key: too long (1025 bytes, at most 1024)"));
	o.key = NULL;
	o.key_len = 16;
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "listener *:1", &e), -EINVAL);
	assert_non_null(strstr(e.msg, "key: no bytes given"));

	/* The library's copy is wiped. */
	o.key = secret;
	o.key_len = strlen(secret);
	assert_int_equal(rdmae_negotiate_auth_setup(&o, &k, "x", &e), 0);
	rdmae_key_wipe(&k);
	assert_int_equal(k.len, 0);
	for (size_t i = 0; i < sizeof(k.bytes); i++)
		assert_int_equal(k.bytes[i], 0);
	rdmae_key_wipe(&kf);
	rdmae_key_wipe(&other);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proof_is_hmac_sha256),
		cmocka_unit_test(test_warm),
		cmocka_unit_test(test_transcript_layout),
		cmocka_unit_test(test_proof_verifies),
		cmocka_unit_test(test_proof_rejects),
		cmocka_unit_test(test_lane_tokens),
		cmocka_unit_test(test_accept_pd),
		cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_key_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
