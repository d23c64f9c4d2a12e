/*
 * parse.c: counterd's pure parsers: counter names, request paths, the
 * --server URL and record-countd's JSON answers. No libevent here, so the
 * fuzz targets can run them alone.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client.h"
#include "util.h"

/* Whether c may appear in a counter name. */
static int
name_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* Whether s (length len) is a valid counter name. */
int
name_valid(const char *s, size_t len)
{
	size_t i;

	if (len < 1 || len > COUNTER_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		if (!name_char((unsigned char)s[i]))
			return 0;
	}
	return 1;
}

/* Whether s is a valid client id prefix (leaves room for ":NAME"). */
int
client_id_valid(const char *s)
{
	size_t i, len = strlen(s);

	if (len < 1 || len + 1 + COUNTER_NAME_MAX > CLIENT_ID_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		if (!name_char((unsigned char)s[i]) && s[i] != ':')
			return 0;
	}
	return 1;
}

/* Match the path of target against pattern; see client.h. */
enum route_match
route_match(const char *target, const char *pattern, char *name)
{
	const char *t = target, *p = pattern;
	int badname = 0;

	if (t == NULL || *t != '/')
		return ROUTE_NO;
	while (*p != '\0') {
		if (p[0] == '*' && (p[1] == '/' || p[1] == '\0')) {
			size_t len = strcspn(t, "/?#");

			if (len == 0)
				return ROUTE_NO;
			if (!name_valid(t, len))
				badname = 1;
			else if (name != NULL) {
				memcpy(name, t, len);
				name[len] = '\0';
			}
			t += len;
			p++;
			continue;
		}
		if (*t != *p)
			return ROUTE_NO;
		t++;
		p++;
	}
	if (*t != '\0' && *t != '?')
		return ROUTE_NO;
	return badname ? ROUTE_BADNAME : ROUTE_YES;
}

/* Parse http://HOST[:PORT][/]; see client.h. */
int
server_url_parse(const char *url, struct server_url *u, const char **why)
{
	const char *h, *end, *portp = NULL;
	size_t hlen;
	unsigned char buf[16];

	memset(u, 0, sizeof *u);
	u->port = 80;
	if (strncmp(url, "http://", 7) != 0) {
		*why = "must start with http:// (e.g. http://127.0.0.1:8080)";
		return -1;
	}
	h = url + 7;
	if (*h == '[') {
		end = strchr(h, ']');
		if (end == NULL) {
			*why = "unterminated [IPv6 address]";
			return -1;
		}
		hlen = (size_t)(end - h - 1);
		if (hlen == 0 || hlen >= sizeof u->host) {
			*why = "bad IPv6 address";
			return -1;
		}
		memcpy(u->host, h + 1, hlen);
		u->host[hlen] = '\0';
		if (inet_pton(AF_INET6, u->host, buf) != 1) {
			*why = "bad IPv6 address";
			return -1;
		}
		u->numeric = u->ipv6 = 1;
		end++;
	} else {
		hlen = strcspn(h, ":/");
		if (hlen == 0 || hlen >= sizeof u->host) {
			*why = "missing or overlong host name";
			return -1;
		}
		memcpy(u->host, h, hlen);
		u->host[hlen] = '\0';
		end = h + hlen;
		if (strcmp(u->host, "localhost") == 0) {
			strcpy(u->host, "127.0.0.1");
			u->numeric = 1;
		} else if (inet_pton(AF_INET, u->host, buf) == 1)
			u->numeric = 1;
		else if (strspn(u->host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJK"
					 "LMNOPQRSTUVWXYZ0123456789.-") !=
			 hlen) {
			*why = "bad host name";
			return -1;
		}
	}
	if (*end == ':') {
		char *ep;
		unsigned long port;

		portp = end + 1;
		if (*portp < '0' || *portp > '9') {
			*why = "bad port";
			return -1;
		}
		port = strtoul(portp, &ep, 10);
		if (port < 1 || port > 65535 ||
		    (*ep != '\0' && strcmp(ep, "/") != 0)) {
			*why = "bad port (1..65535, and no path)";
			return -1;
		}
		u->port = (uint16_t)port;
	} else if (*end != '\0' && strcmp(end, "/") != 0) {
		*why = "a path is not allowed (give http://HOST:PORT)";
		return -1;
	}
	return 0;
}

/* Read an integer member of o into *v; -1 if missing or not an integer. */
static int
json_int(json_t *o, const char *key, json_int_t *v)
{
	json_t *j = json_object_get(o, key);

	if (!json_is_integer(j))
		return -1;
	*v = json_integer_value(j);
	return 0;
}

/* Load an answer, noting whether jansson ran out of memory on the way. */
static json_t *
parse_json(const char *body, size_t len, json_error_t *err)
{
	jmem_clear();
	return json_loadb(body, len, JSON_REJECT_DUPLICATES, err);
}

/*
 * Why parse_json failed: not JSON, or no memory to read it (jansson may
 * blame a token then); errno says which.
 */
static void
parse_json_why(const json_error_t *err, char *why, size_t whylen)
{
	if (jmem_failed() || json_error_code(err) == json_error_out_of_memory) {
		snprintf(why, whylen, "out of memory reading the answer");
		errno = ENOMEM;
	} else {
		snprintf(why, whylen, "invalid JSON: %s", err->text);
		errno = EINVAL;
	}
}

/* Check record-countd's answer to POST /record-count. */
int
answer_parse_record(const char *body, size_t len, const char *client,
		    int64_t first, size_t n, int64_t *max_dup, char *why,
		    size_t whylen)
{
	json_t *root, *recs, *cl;
	json_error_t err;
	size_t i;
	int rc = -1;

	root = parse_json(body, len, &err);
	if (root == NULL) {
		parse_json_why(&err, why, whylen);
		return -1;
	}
	cl = json_object_get(root, "client");
	recs = json_object_get(root, "records");
	if (!json_is_string(cl) || strcmp(json_string_value(cl), client) != 0) {
		snprintf(why, whylen, "answer names another client");
		goto out;
	}
	if (!json_is_array(recs) || json_array_size(recs) != n) {
		snprintf(why, whylen, "answer has %zu records, expected %zu",
			 json_is_array(recs) ? json_array_size(recs) : 0, n);
		goto out;
	}
	*max_dup = 0;
	for (i = 0; i < n; i++) {
		json_t *rec = json_array_get(recs, i);
		json_t *dup = json_object_get(rec, "duplicate");
		json_int_t v, seq;

		if (json_int(rec, "value", &v) != 0 ||
		    json_int(rec, "seq", &seq) != 0 || !json_is_boolean(dup)) {
			snprintf(why, whylen,
				 "record %zu lacks value, seq or duplicate", i);
			goto out;
		}
		if ((int64_t)v != first + (int64_t)i) {
			snprintf(why, whylen,
				 "record %zu acknowledges %" PRId64
				 ", expected %" PRId64,
				 i, (int64_t)v, first + (int64_t)i);
			goto out;
		}
		if (json_is_true(dup))
			*max_dup = (int64_t)v;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

/* Read last_value from a GET /clients/ID answer. */
int
answer_parse_client(const char *body, size_t len, const char *client,
		    int64_t *last, char *why, size_t whylen)
{
	json_t *root, *cl;
	json_error_t err;
	json_int_t v;
	int rc = -1;

	root = parse_json(body, len, &err);
	if (root == NULL) {
		parse_json_why(&err, why, whylen);
		return -1;
	}
	cl = json_object_get(root, "client");
	if (!json_is_string(cl) || strcmp(json_string_value(cl), client) != 0)
		snprintf(why, whylen, "answer names another client");
	else if (json_int(root, "last_value", &v) != 0 || v < 0)
		snprintf(why, whylen, "answer lacks a valid last_value");
	else {
		*last = (int64_t)v;
		rc = 0;
	}
	json_decref(root);
	return rc;
}
