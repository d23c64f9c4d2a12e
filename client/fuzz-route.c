/*
 * fuzz-route.c: libFuzzer target for counterd's request-target matching and
 * counter-name checks, and for the --server URL parser.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const patterns[] = {
	    "/next", "/counters/*/next", "/counters", "/counters/*", "/stats"};
	char *s = malloc(size + 1), name[COUNTER_NAME_MAX + 1];
	struct server_url u;
	const char *why;
	size_t i;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	for (i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
		name[0] = '\0';
		if (route_match(s, patterns[i], name) == ROUTE_YES &&
		    strchr(patterns[i], '*') != NULL &&
		    !name_valid(name, strlen(name)))
			abort(); /* a matched name must be valid */
	}
	(void)name_valid(s, size);
	(void)client_id_valid(s);
	(void)server_url_parse(s, &u, &why);
	free(s);
	return 0;
}
