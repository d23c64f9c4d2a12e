/*
 * input.c: strict parsing of query strings and JSON bodies. Pure functions
 * with no I/O, so the fuzz targets exercise exactly what the daemon runs.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "util.h"

/* Fill err with code and a formatted message; returns -1. */
static int __attribute__((format(printf, 3, 4)))
input_fail(struct input_error *err, const char *code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return -1;
}

/* The value of one hex digit, or -1. */
static int
input_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode src[0..len) into dst (NUL-terminated); -1 on a bad escape or a NUL byte. */
static int
input_decode(const char *src, size_t len, char *dst)
{
	size_t i;
	int hi, lo;

	for (i = 0; i < len; i++) {
		if (src[i] == '%') {
			if (i + 2 >= len)
				return -1;
			hi = input_hex(src[i + 1]);
			lo = input_hex(src[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			*dst++ = (char)(hi * 16 + lo);
			i += 2;
		} else if (src[i] == '+')
			*dst++ = ' ';
		else if (src[i] == '\0')
			return -1;
		else
			*dst++ = src[i];
	}
	*dst = '\0';
	return 0;
}

/* Split "a=1&b=2" into decoded pairs. */
int
input_query_parse(const char *qs, size_t len, struct input_query *q, struct input_error *err)
{
	const char *p = qs, *end = qs + len, *amp, *eq;
	char *out;

	memset(q, 0, sizeof *q);
	if ((q->buf = malloc(len + 2 * INPUT_MAX_KV + 2)) == NULL)
		return input_fail(err, "out_of_memory", "out of memory parsing the query; retry later");
	out = q->buf;
	while (p < end) {
		amp = memchr(p, '&', (size_t)(end - p));
		if (amp == NULL)
			amp = end;
		if (amp == p) {         /* tolerate "a=1&&b=2" and a trailing '&' */
			p++;
			continue;
		}
		if (q->n == INPUT_MAX_KV)
			return input_fail(err, "invalid_query", "too many query parameters (at most %d)",
			    INPUT_MAX_KV);
		eq = memchr(p, '=', (size_t)(amp - p));
		q->kv[q->n].key = out;
		if (input_decode(p, (size_t)((eq ? eq : amp) - p), out) != 0)
			return input_fail(err, "invalid_query", "query: bad percent-encoding");
		out += strlen(out) + 1;
		q->kv[q->n].value = out;
		if (eq == NULL)
			*out = '\0';
		else if (input_decode(eq + 1, (size_t)(amp - eq - 1), out) != 0)
			return input_fail(err, "invalid_query", "query: bad percent-encoding");
		out += strlen(out) + 1;
		q->n++;
		p = amp;
	}
	return 0;
}

/* Free what input_query_parse allocated. */
void
input_query_free(struct input_query *q)
{
	free(q->buf);
	q->buf = NULL;
	q->n = 0;
}

/* Reject unknown and repeated parameters. */
int
input_query_check(const struct input_query *q, const char *const *allowed, struct input_error *err)
{
	size_t i, j;
	const char *const *a;
	char shown[40];

	for (i = 0; i < q->n; i++) {
		for (a = allowed; *a != NULL; a++)
			if (strcmp(*a, q->kv[i].key) == 0)
				break;
		snprintf(shown, sizeof shown, "%s", q->kv[i].key);
		for (j = 0; shown[j] != '\0'; j++)
			if ((unsigned char)shown[j] < 0x20 || shown[j] == '"' || shown[j] == '\\' ||
			    (unsigned char)shown[j] >= 0x7f)
				shown[j] = '?';
		if (*a == NULL)
			return input_fail(err, "unknown_parameter", "unknown query parameter \"%s\"", shown);
		for (j = 0; j < i; j++)
			if (strcmp(q->kv[j].key, q->kv[i].key) == 0)
				return input_fail(err, "invalid_query", "%s: given more than once", shown);
	}
	return 0;
}

/* The value of key, or NULL. */
const char *
input_query_get(const struct input_query *q, const char *key)
{
	size_t i;

	for (i = 0; i < q->n; i++)
		if (strcmp(q->kv[i].key, key) == 0)
			return q->kv[i].value;
	return NULL;
}

/* A record value: 1..INT64_MAX in plain decimal. */
int
input_value(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p;

	if (s[0] < '1' || s[0] > '9')
		return -1;
	for (p = s; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' || p - s >= 19)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v > (uint64_t)INT64_MAX)
		return -1;
	*out = v;
	return 0;
}

/* A client id: 1..128 of [A-Za-z0-9._:-]. */
int
input_client(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++) {
		char c = s[n];
		if (n >= LIMIT_CLIENT)
			return -1;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		    c == '_' || c == ':' || c == '-'))
			return -1;
	}
	return n == 0 ? -1 : 0;
}

/* Quote at most 40 bytes of s for a message, replacing what JSON or a terminal would mangle. */
static const char *
input_shown(const char *s, char *buf, size_t size)
{
	size_t i;

	snprintf(buf, size, "%s", s);
	for (i = 0; buf[i] != '\0'; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == '"' || buf[i] == '\\' || (unsigned char)buf[i] >= 0x7f)
			buf[i] = '?';
	if (strlen(s) > size - 1 && size > 4)          /* cut by snprintf */
		memcpy(buf + size - 4, "...", 4);
	return buf;
}

/* GET /record-count?value=N[&client=ID] */
int
input_record_query(const char *qs, size_t len, char *client, uint64_t *value, struct input_error *err)
{
	static const char *const allowed[] = { "value", "client", NULL };
	struct input_query q;
	const char *v, *c;
	char shown[44];
	int rc = -1;

	if (input_query_parse(qs, len, &q, err) != 0 || input_query_check(&q, allowed, err) != 0)
		goto out;
	if ((v = input_query_get(&q, "value")) == NULL) {
		input_fail(err, "missing_value", "value: missing (e.g. /record-count?value=1&client=me)");
		goto out;
	}
	if (input_value(v, value) != 0) {
		input_fail(err, "invalid_value", "value: \"%s\" is not an integer in 1..9223372036854775807"
		    " (no sign, spaces or leading zeros)", input_shown(v, shown, sizeof shown));
		goto out;
	}
	c = input_query_get(&q, "client");
	if (c == NULL)
		c = "anonymous";
	if (input_client(c) != 0) {
		input_fail(err, "invalid_client", "client: \"%s\" is not 1..128 characters of [A-Za-z0-9._:-]",
		    input_shown(c, shown, sizeof shown));
		goto out;
	}
	strcpy(client, c);
	rc = 0;
out:
	input_query_free(&q);
	return rc;
}

/* GET /records?client=ID&after=SEQ&limit=L */
int
input_records_query(const char *qs, size_t len, char *client, uint64_t *after, unsigned *limit,
    struct input_error *err)
{
	static const char *const allowed[] = { "client", "after", "limit", NULL };
	struct input_query q;
	const char *s, *why;
	uint64_t n;
	int rc = -1;

	*client = '\0';
	*after = 0;
	*limit = DEFAULT_RECORDS_PAGE;
	if (input_query_parse(qs, len, &q, err) != 0 || input_query_check(&q, allowed, err) != 0)
		goto out;
	if ((s = input_query_get(&q, "client")) != NULL) {
		if (input_client(s) != 0) {
			input_fail(err, "invalid_client", "client: must be 1..128 characters of [A-Za-z0-9._:-]");
			goto out;
		}
		strcpy(client, s);
	}
	if ((s = input_query_get(&q, "after")) != NULL && parse_uint(s, 0, INT64_MAX, after, &why) != 0) {
		input_fail(err, "invalid_after", "after: must be a seq, 0..9223372036854775807");
		goto out;
	}
	if ((s = input_query_get(&q, "limit")) != NULL) {
		if (parse_uint(s, 1, LIMIT_RECORDS_PAGE, &n, &why) != 0) {
			input_fail(err, "invalid_limit", "limit: must be 1..%d", LIMIT_RECORDS_PAGE);
			goto out;
		}
		*limit = (unsigned)n;
	}
	rc = 0;
out:
	input_query_free(&q);
	return rc;
}

/* A client id from a path segment, percent-decoded into id (LIMIT_CLIENT + 1 bytes); 0 or -1. */
int
input_path_client(const char *seg, char *id)
{
	char buf[3 * LIMIT_CLIENT + 1];
	size_t len = strlen(seg);

	/* Each character takes at most three ("%3A"), so a longer segment decodes too long. */
	if (len > 3 * LIMIT_CLIENT || strchr(seg, '+') != NULL || input_decode(seg, len, buf) != 0 ||
	    input_client(buf) != 0)
		return -1;
	strcpy(id, buf);
	return 0;
}

/* Check a body's shape (object, known fields, client, a values array of 1..LIMIT_VALUES); -1 via err. */
static int
input_body_shape(json_t *root, const char **client, json_t **values, struct input_error *err)
{
	json_t *jc, *item;
	const char *key;
	char shown[44];

	/* Set on every path: clang --analyze does not follow input_fail's -1. */
	*client = "anonymous";
	*values = NULL;
	if (!json_is_object(root))
		return input_fail(err, "invalid_json", "body: expected a JSON object {\"client\": ..., \"values\": [...]}");
	json_object_foreach(root, key, item) {
		if (strcmp(key, "client") != 0 && strcmp(key, "values") != 0)
			return input_fail(err, "unknown_field", "body: unknown field \"%s\" (expected client, values)",
			    input_shown(key, shown, sizeof shown));
	}
	if ((jc = json_object_get(root, "client")) != NULL) {
		if (!json_is_string(jc) || strlen(json_string_value(jc)) != json_string_length(jc) ||
		    input_client(json_string_value(jc)) != 0)
			return input_fail(err, "invalid_client",
			    "client: must be a string of 1..128 characters of [A-Za-z0-9._:-]");
		*client = json_string_value(jc);
	}
	*values = json_object_get(root, "values");
	if (*values == NULL)
		return input_fail(err, "missing_value", "values: missing (e.g. {\"client\": \"me\", \"values\": [1, 2]})");
	if (!json_is_array(*values))
		return input_fail(err, "invalid_value", "values: must be an array of integers");
	if (json_array_size(*values) == 0 || json_array_size(*values) > LIMIT_VALUES)
		return input_fail(err, "invalid_value", "values: must hold 1..%d values, not %zu", LIMIT_VALUES,
		    json_array_size(*values));
	return 0;
}

/*
 * Did json_loadb fail for want of memory? jansson may say so, say nothing,
 * or blame the token it could not copy ("invalid token"): what tells is
 * whether one of its allocations failed (see jmem.c).
 */
static int
input_json_nomem(const json_error_t *jerr)
{
	return jmem_failed() || json_error_code(jerr) == json_error_out_of_memory;
}

/* Name the problem in a body jansson refused for an integer too big for it; always -1 via err. */
static int
input_body_too_big(const char *body, size_t len, struct input_error *err)
{
	json_t *root, *jv, *item;
	json_error_t jerr;
	const char *c;
	size_t i;
	double d;

	/* Decoded again with every number as a double, the body's shape says which field holds it. */
	jmem_clear();
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
	if (root == NULL && input_json_nomem(&jerr))
		return input_fail(err, "out_of_memory", "out of memory parsing the body; nothing was recorded, retry later");
	if (root == NULL)
		return input_fail(err, "invalid_json", "body: not valid JSON at line %d column %d: %s", jerr.line,
		    jerr.column, jerr.text);
	if (input_body_shape(root, &c, &jv, err) != 0)
		goto out;
	json_array_foreach(jv, i, item) {
		if (!json_is_number(item)) {
			input_fail(err, "invalid_value", "values[%zu]: must be an integer in 1..9223372036854775807", i);
			goto out;
		}
		d = json_number_value(item);
		if (d < 1 || d >= 9223372036854775808.0) {
			input_fail(err, "invalid_value", "values[%zu]: out of range (1..9223372036854775807)", i);
			goto out;
		}
	}
	input_fail(err, "invalid_value", "values: a value is out of range (1..9223372036854775807)");
out:
	json_decref(root);
	return -1;
}

/* POST /record-count: {"client": "ID", "values": [N, ...]} */
int
input_record_body(const char *body, size_t len, char *client, uint64_t **values, size_t *n,
    struct input_error *err)
{
	json_t *root, *jv, *item;
	json_error_t jerr;
	const char *c;
	size_t i;
	json_int_t iv;

	*values = NULL;
	*n = 0;
	jmem_clear();
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		if (input_json_nomem(&jerr))
			return input_fail(err, "out_of_memory",
			    "out of memory parsing the body; nothing was recorded, retry later");
		if (strstr(jerr.text, "too big") != NULL)
			return input_body_too_big(body, len, err);
		return input_fail(err, "invalid_json", "body: not valid JSON at line %d column %d: %s", jerr.line,
		    jerr.column, jerr.text);
	}
	if (input_body_shape(root, &c, &jv, err) != 0)
		goto fail;
	if ((*values = calloc(json_array_size(jv), sizeof **values)) == NULL) {
		input_fail(err, "out_of_memory", "out of memory parsing the body; nothing was recorded, retry later");
		goto fail;
	}
	json_array_foreach(jv, i, item) {
		if (!json_is_integer(item) || (iv = json_integer_value(item)) < 1) {
			input_fail(err, "invalid_value", "values[%zu]: must be an integer in 1..9223372036854775807", i);
			goto fail;
		}
		(*values)[i] = (uint64_t)iv;
	}
	*n = json_array_size(jv);
	strcpy(client, c);
	json_decref(root);
	return 0;
fail:
	free(*values);
	*values = NULL;
	json_decref(root);
	return -1;
}
