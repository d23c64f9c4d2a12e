/*
 * fuzz-route.c: libFuzzer target for counterd's request-target matching and
 * counter-name checks, and for the --server URL parser. Each result is
 * checked against the documented rule, written here independently; the
 * checks abort() when they disagree.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "fuzz.h"

#define NAME_SET                                                               \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

/* Counter names: 1..64 of [A-Za-z0-9._-]. */
static int
fuzz_name_ok(const char *s, size_t len)
{
	size_t i;

	if (len < 1 || len > COUNTER_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] == '\0' || strchr(NAME_SET, s[i]) == NULL)
			return 0;
	return 1;
}

/*
 * Check route_match of s against pattern: a match means the path (up to '?')
 * is the pattern with its '*' replaced by the name given back.
 */
static void
fuzz_route(const char *s, const char *pattern)
{
	char name[COUNTER_NAME_MAX + 1], built[256];
	const char *star = strchr(pattern, '*');
	size_t plen = strcspn(s, "?");
	enum route_match m;

	memset(name, 0, sizeof name);
	m = route_match(s, pattern, name);
	if (m == ROUTE_NO)
		return;
	FUZZ_CHECK(m == ROUTE_YES || (m == ROUTE_BADNAME && star != NULL));
	if (m == ROUTE_BADNAME)
		return;
	if (star == NULL) {
		FUZZ_CHECK(plen == strlen(pattern) &&
			   memcmp(s, pattern, plen) == 0);
		return;
	}
	FUZZ_CHECK(fuzz_name_ok(name, strlen(name)));
	snprintf(built, sizeof built, "%.*s%s%s", (int)(star - pattern),
		 pattern, name, star + 1);
	FUZZ_CHECK(plen == strlen(built) && memcmp(s, built, plen) == 0);
}

/* A parsed URL, written back as http://HOST:PORT/, must parse the same. */
static void
fuzz_url(const char *s)
{
	struct server_url u, u2;
	const char *why = NULL;
	char again[256];

	if (server_url_parse(s, &u, &why) != 0) {
		FUZZ_CHECK(why != NULL && why[0] != '\0');
		return;
	}
	FUZZ_CHECK(strncmp(s, "http://", 7) == 0 && u.port >= 1);
	FUZZ_CHECK(u.host[0] != '\0' && strlen(u.host) < sizeof u.host);
	FUZZ_CHECK(!u.ipv6 || u.numeric);
	snprintf(again, sizeof again,
		 u.ipv6 ? "http://[%s]:%u/" : "http://%s:%u/", u.host,
		 (unsigned)u.port);
	FUZZ_CHECK(server_url_parse(again, &u2, &why) == 0);
	FUZZ_CHECK(strcmp(u.host, u2.host) == 0 && u.port == u2.port &&
		   u.numeric == u2.numeric && u.ipv6 == u2.ipv6);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const patterns[] = {
	    "/next", "/counters/*/next", "/counters", "/counters/*", "/stats"};
	char *s = malloc(size + 1);
	size_t i, len;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	len = strlen(s);
	for (i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
		fuzz_route(s, patterns[i]);
	FUZZ_CHECK(name_valid(s, size) == fuzz_name_ok(s, size));
	/* A client id leaves room for ":NAME" within record-countd's 128. */
	FUZZ_CHECK(client_id_valid(s) ==
		   (len >= 1 && len + 1 + COUNTER_NAME_MAX <= CLIENT_ID_MAX &&
		    strspn(s, NAME_SET ":") == len));
	fuzz_url(s);
	free(s);
	return 0;
}
