/*
 * fuzz-query.c: libFuzzer target for the query-string parser of /record-count,
 * /records and /stats, the /clients/ID path segment, and the value and client
 * checks under them. Every success is checked against what it promises; the
 * checks abort() when a promise is broken.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "util.h"
#include "fuzz.h"

/* The documented value rule: 1..9223372036854775807 in decimal, no sign, spaces or leading zeros. */
static int
fuzz_value_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 19 || s[0] == '0' || strspn(s, "0123456789") != n)
		return 0;
	return n < 19 || strcmp(s, "9223372036854775807") <= 0;
}

/* Percent-encode every byte of s but the unreserved ones into out (3 * strlen(s) + 1 bytes). */
static size_t
fuzz_encode(const char *s, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '.' || c == '_' || c == '~')
			out[o++] = (char)c;
		else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return o;
}

/* Parsed pairs, encoded again and parsed again, must come back the same. */
static void
fuzz_query_roundtrip(const struct input_query *q, size_t size)
{
	struct input_query q2;
	struct input_error err;
	char *text;
	size_t i, o = 0;

	/* Each decoded byte encodes to at most three, plus '=' and '&' per pair. */
	if ((text = malloc(3 * size + 2 * q->n + 1)) == NULL)
		return;
	for (i = 0; i < q->n; i++) {
		if (i > 0)
			text[o++] = '&';
		o += fuzz_encode(q->kv[i].key, text + o);
		text[o++] = '=';
		o += fuzz_encode(q->kv[i].value, text + o);
	}
	text[o] = '\0';
	memset(&err, 0, sizeof err);
	FUZZ_CHECK(input_query_parse(text, o, &q2, &err) == 0);
	FUZZ_CHECK(q2.n == q->n);
	for (i = 0; i < q->n; i++) {
		FUZZ_CHECK(strcmp(q2.kv[i].key, q->kv[i].key) == 0);
		FUZZ_CHECK(strcmp(q2.kv[i].value, q->kv[i].value) == 0);
	}
	input_query_free(&q2);
	free(text);
}

/* Whether every key of q is in allowed, and none is given twice. */
static int
fuzz_keys_ok(const struct input_query *q, const char *const *allowed)
{
	size_t i, j, k;

	for (i = 0; i < q->n; i++) {
		for (k = 0; allowed[k] != NULL && strcmp(allowed[k], q->kv[i].key) != 0; k++)
			;
		if (allowed[k] == NULL)
			return 0;
		for (j = i + 1; j < q->n; j++)
			if (strcmp(q->kv[i].key, q->kv[j].key) == 0)
				return 0;
	}
	return 1;
}

/* The number of non-empty '&'-separated parameters of data. */
static size_t
fuzz_count_params(const char *data, size_t size)
{
	size_t i, n = 0, run = 0;

	for (i = 0; i <= size; i++) {
		if (i == size || data[i] == '&') {
			n += run > 0;
			run = 0;
		} else
			run++;
	}
	return n;
}

/* An error must carry a code and a message (http_error makes it printable). */
static void
fuzz_error_ok(const struct input_error *err)
{
	FUZZ_CHECK(err->code != NULL && err->code[0] != '\0');
	FUZZ_CHECK(memchr(err->message, '\0', sizeof err->message) != NULL && err->message[0] != '\0');
}

/*
 * A message quotes the refused text as is if it has at most 43 bytes (each
 * control, quote, backslash or non-ASCII byte shown as '?'), else its first
 * 40 and "...".
 */
static void
fuzz_shown(const char *s, const char *message)
{
	char want[48];
	size_t i, n;

	if (s == NULL)
		return;
	n = strlen(s);
	want[0] = '"';
	for (i = 0; i < n && i < 43; i++)
		want[i + 1] = (unsigned char)s[i] < 0x20 || s[i] == '"' || s[i] == '\\' ||
		    (unsigned char)s[i] >= 0x7f ? '?' : s[i];
	if (n > 43)
		memcpy(want + 41, "...", 3), i = 43;
	want[i + 1] = '"';
	want[i + 2] = '\0';
	FUZZ_CHECK(strstr(message, want) != NULL);
}

/* GET /records?client=ID&after=SEQ&limit=L, as api_records() takes it. */
static void
fuzz_records(const char *qs, size_t len)
{
	static const char *const allowed[] = { "client", "after", "limit", NULL };
	struct input_query q;
	struct input_error err;
	const char *s;
	char client[LIMIT_CLIENT + 1], shown[24];
	uint64_t after;
	unsigned limit;
	int rc;

	memset(&err, 0, sizeof err);
	rc = input_records_query(qs, len, client, &after, &limit, &err);
	if (rc != 0) {
		fuzz_error_ok(&err);
		return;
	}
	/* Accepted: what it took is what the query says, by the documented rule. */
	FUZZ_CHECK(input_query_parse(qs, len, &q, &err) == 0 && fuzz_keys_ok(&q, allowed));
	s = input_query_get(&q, "client");
	FUZZ_CHECK(s != NULL ? strcmp(client, s) == 0 && fuzz_client_ok(s) : client[0] == '\0');
	FUZZ_CHECK(after <= INT64_MAX);
	if ((s = input_query_get(&q, "after")) != NULL) {
		snprintf(shown, sizeof shown, "%" PRIu64, after);
		s += strspn(s, "0");            /* leading zeros are taken */
		FUZZ_CHECK(strcmp(s[0] == '\0' ? "0" : s, shown) == 0);
	} else
		FUZZ_CHECK(after == 0);
	if ((s = input_query_get(&q, "limit")) != NULL) {
		snprintf(shown, sizeof shown, "%u", limit);
		s += strspn(s, "0");
		FUZZ_CHECK(limit >= 1 && limit <= LIMIT_RECORDS_PAGE && strcmp(s, shown) == 0);
	} else
		FUZZ_CHECK(limit == DEFAULT_RECORDS_PAGE);
	input_query_free(&q);
}

/* Parse one input as a query string every way the daemon does. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const allowed[] = { "value", "client", NULL };
	const char *qs = (const char *)data, *v, *c;
	char client[LIMIT_CLIENT + 1], id[LIMIT_CLIENT + 1], shown[24], *s;
	struct input_query q;
	struct input_error err;
	uint64_t value;
	int rc;

	/* GET /record-count?value=N[&client=ID] */
	memset(&err, 0, sizeof err);
	rc = input_record_query(qs, size, client, &value, &err);
	memset(&q, 0, sizeof q);
	if (input_query_parse(qs, size, &q, &err) == 0) {
		FUZZ_CHECK(q.n <= INPUT_MAX_KV && q.n == fuzz_count_params(qs, size));
		fuzz_query_roundtrip(&q, size);
		FUZZ_CHECK((input_query_check(&q, allowed, &err) == 0) == fuzz_keys_ok(&q, allowed));
		if (rc == 0) {
			FUZZ_CHECK(input_query_check(&q, allowed, &err) == 0);
			v = input_query_get(&q, "value");
			c = input_query_get(&q, "client");
			FUZZ_CHECK(v != NULL && fuzz_value_ok(v));
			snprintf(shown, sizeof shown, "%" PRIu64, value);
			FUZZ_CHECK(strcmp(shown, v) == 0);
			FUZZ_CHECK(strcmp(client, c != NULL ? c : "anonymous") == 0 && fuzz_client_ok(client));
		}
	} else {
		FUZZ_CHECK(rc != 0);
		fuzz_error_ok(&err);
	}
	if (rc != 0)
		fuzz_error_ok(&err);
	if (rc != 0 && err.code != NULL && strcmp(err.code, "invalid_value") == 0)
		fuzz_shown(input_query_get(&q, "value"), err.message);
	if (rc != 0 && err.code != NULL && strcmp(err.code, "invalid_client") == 0)
		fuzz_shown(input_query_get(&q, "client"), err.message);
	input_query_free(&q);

	fuzz_records(qs, size);

	/* The whole input as one string: a value, a client id, a /clients/ID segment. */
	if ((s = malloc(size + 1)) == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (strlen(s) == size) {
		FUZZ_CHECK((input_value(s, &value) == 0) == fuzz_value_ok(s));
		if (fuzz_value_ok(s)) {
			snprintf(shown, sizeof shown, "%" PRIu64, value);
			FUZZ_CHECK(strcmp(shown, s) == 0);
		}
		FUZZ_CHECK((input_client(s) == 0) == fuzz_client_ok(s));
		if (input_path_client(s, id) == 0) {
			FUZZ_CHECK(fuzz_client_ok(id) && strchr(s, '+') == NULL);
			/* Encoded again (ids need no escapes), it must decode to the same id. */
			FUZZ_CHECK(input_path_client(id, client) == 0 && strcmp(client, id) == 0);
		} else if (fuzz_client_ok(s))
			abort();                        /* a plain valid id is a valid segment */
	}
	free(s);
	return 0;
}
