/*
 * fuzz-answer.c: libFuzzer target for the parsers of record-countd's JSON
 * answers (POST /record-count and GET /clients/ID).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[256];
	int64_t last, dup;
	size_t n = size > 0 ? data[0] % 8 : 0;

	(void)answer_parse_record((const char *)data, size, "test:default", 1,
				  n, &dup, why, sizeof why);
	(void)answer_parse_client((const char *)data, size, "test:default",
				  &last, why, sizeof why);
	return 0;
}
