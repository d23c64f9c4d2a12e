/*
 * fuzz-body.c: libFuzzer target for the JSON body parser of POST /record-count.
 * A success must satisfy every documented limit and survive a round trip; a
 * failure must say what was wrong. The checks abort() when broken.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with the failed condition named: libFuzzer then keeps the input. */
#define FUZZ_CHECK(cond) do {							\
	if (!(cond)) {								\
		fprintf(stderr, "fuzz-body: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
		abort();							\
	}									\
} while (0)

/* The documented client id rule, written independently of input_client(). */
static int
fuzz_client_ok(const char *s)
{
	static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";
	size_t n = strlen(s);

	return n >= 1 && n <= LIMIT_CLIENT && strspn(s, set) == n;
}

/* The client a parsed body names: its "client" member, or the default. */
static const char *
fuzz_body_client(const uint8_t *data, size_t size, char *buf, size_t len)
{
	json_t *root, *jc;

	snprintf(buf, len, "anonymous");
	if ((root = json_loadb((const char *)data, size, 0, NULL)) == NULL)
		return NULL;
	if ((jc = json_object_get(root, "client")) != NULL)
		snprintf(buf, len, "%s", json_is_string(jc) ? json_string_value(jc) : "");
	json_decref(root);
	return buf;
}

/* Write the canonical body of client and values, parse it again and compare. */
static void
fuzz_body_roundtrip(const char *client, const uint64_t *values, size_t n)
{
	char again[LIMIT_CLIENT + 1], *text;
	struct input_error err;
	uint64_t *values2;
	size_t n2, i, o, cap = 64 + LIMIT_CLIENT + 21 * n;

	if ((text = malloc(cap)) == NULL)
		return;
	o = (size_t)snprintf(text, cap, "{\"client\":\"%s\",\"values\":[", client);
	for (i = 0; i < n; i++)
		o += (size_t)snprintf(text + o, cap - o, "%s%" PRIu64, i > 0 ? "," : "", values[i]);
	o += (size_t)snprintf(text + o, cap - o, "]}");
	FUZZ_CHECK(o < cap);
	memset(&err, 0, sizeof err);
	FUZZ_CHECK(input_record_body(text, o, again, &values2, &n2, &err) == 0);
	FUZZ_CHECK(n2 == n && strcmp(again, client) == 0);
	FUZZ_CHECK(memcmp(values2, values, n * sizeof *values) == 0);
	free(values2);
	free(text);
}

/* Parse one input as a POST body and check what the answer promises. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char client[LIMIT_CLIENT + 1], named[4 * LIMIT_CLIENT];
	struct input_error err;
	uint64_t *values;
	size_t n = 12345, i;

	memset(&err, 0, sizeof err);
	memset(client, 0, sizeof client);
	if (input_record_body((const char *)data, size, client, &values, &n, &err) == 0) {
		FUZZ_CHECK(n >= 1 && n <= LIMIT_VALUES && values != NULL);
		FUZZ_CHECK(fuzz_client_ok(client));
		FUZZ_CHECK(fuzz_body_client(data, size, named, sizeof named) != NULL && strcmp(named, client) == 0);
		for (i = 0; i < n; i++)
			FUZZ_CHECK(values[i] >= 1 && values[i] <= INT64_MAX);
		fuzz_body_roundtrip(client, values, n);
		free(values);
	} else {
		FUZZ_CHECK(values == NULL && n == 0);
		FUZZ_CHECK(err.code != NULL && err.code[0] != '\0' && err.message[0] != '\0');
		FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
		/* A value out of range is always named by its index; the generic message is a last resort. */
		FUZZ_CHECK(strncmp(err.message, "values: a value is out of range", 31) != 0);
	}
	return 0;
}
