/*
 * fuzz-body.c: libFuzzer target for the JSON body parser of POST /record-count.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parse one input as a POST body; a success must satisfy every documented limit. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char client[LIMIT_CLIENT + 1];
	struct input_error err;
	uint64_t *values;
	size_t n, i;

	if (input_record_body((const char *)data, size, client, &values, &n, &err) == 0) {
		if (n < 1 || n > LIMIT_VALUES || input_client(client) != 0)
			abort();
		for (i = 0; i < n; i++)
			if (values[i] < 1 || values[i] > INT64_MAX)
				abort();
		free(values);
	} else if (err.code == NULL || values != NULL)
		abort();
	return 0;
}
