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
#include "fuzz.h"

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

/*
 * The documented rule, read with jansson alone: an object with at most the
 * members "client" (1..128 of [A-Za-z0-9._:-]) and "values" (1..1000
 * integers in 1..9223372036854775807), no member twice.
 */
static int
fuzz_body_ok(const uint8_t *data, size_t size)
{
	json_t *root, *jc, *jv, *item;
	const char *key;
	size_t i;
	int ok = 0;

	if ((root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return 0;
	if (!json_is_object(root))
		goto out;
	json_object_foreach(root, key, item)
		if (strcmp(key, "client") != 0 && strcmp(key, "values") != 0)
			goto out;
	jc = json_object_get(root, "client");
	if (jc != NULL && (!json_is_string(jc) || memchr(json_string_value(jc), '\0', json_string_length(jc)) ||
	    !fuzz_client_ok(json_string_value(jc))))
		goto out;
	jv = json_object_get(root, "values");
	if (!json_is_array(jv) || json_array_size(jv) < 1 || json_array_size(jv) > LIMIT_VALUES)
		goto out;
	json_array_foreach(jv, i, item)
		if (!json_is_integer(item) || json_integer_value(item) < 1)
			goto out;
	ok = 1;
out:
	json_decref(root);
	return ok;
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
	int ok;

	memset(&err, 0, sizeof err);
	memset(client, 0, sizeof client);
	ok = fuzz_body_ok(data, size);
	if (input_record_body((const char *)data, size, client, &values, &n, &err) == 0) {
		FUZZ_CHECK(ok);
		FUZZ_CHECK(n >= 1 && n <= LIMIT_VALUES && values != NULL);
		FUZZ_CHECK(fuzz_client_ok(client));
		FUZZ_CHECK(fuzz_body_client(data, size, named, sizeof named) != NULL && strcmp(named, client) == 0);
		for (i = 0; i < n; i++)
			FUZZ_CHECK(values[i] >= 1 && values[i] <= INT64_MAX);
		fuzz_body_roundtrip(client, values, n);
		free(values);
	} else {
		FUZZ_CHECK(!ok);
		FUZZ_CHECK(values == NULL && n == 0);
		FUZZ_CHECK(err.code != NULL && err.code[0] != '\0' && err.message[0] != '\0');
		FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
		/* A value out of range is always named by its index; the generic message is a last resort. */
		FUZZ_CHECK(strncmp(err.message, "values: a value is out of range", 31) != 0);
	}
	return 0;
}
