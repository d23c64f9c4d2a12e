/*
 * fuzz-query.c: libFuzzer target for the query-string parser of /record-count and /records.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parse one input as a query string both ways the daemon does. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const allowed[] = { "client", "after", "limit", NULL };
	char client[LIMIT_CLIENT + 1];
	struct input_query q;
	struct input_error err;
	uint64_t value;

	if (input_record_query((const char *)data, size, client, &value, &err) == 0) {
		if (value < 1 || value > INT64_MAX || input_client(client) != 0)
			abort();
	} else if (err.code == NULL || strlen(err.message) >= sizeof err.message)
		abort();
	if (input_query_parse((const char *)data, size, &q, &err) == 0)
		(void)input_query_check(&q, allowed, &err);
	input_query_free(&q);
	return 0;
}
