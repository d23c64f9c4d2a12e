/*
 * fuzz-answer.c: libFuzzer target for the parsers of record-countd's JSON
 * answers (POST /record-count and GET /clients/ID). A success is checked
 * against an independent reading of the same document; the checks abort()
 * when it disagrees.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client.h"
#include "fuzz.h"

/*
 * The documented answer, read with jansson alone: it names client and holds
 * n records, record i acknowledging first + i with an integer seq and a
 * boolean duplicate.
 */
static int
fuzz_record_ok(json_t *doc, int64_t first, size_t n)
{
	json_t *cl = json_object_get(doc, "client"), *recs, *rec;
	size_t i;

	recs = json_object_get(doc, "records");
	if (!json_is_string(cl) ||
	    strcmp(json_string_value(cl), "test:default") != 0 ||
	    !json_is_array(recs) || json_array_size(recs) != n)
		return 0;
	json_array_foreach(recs, i, rec)
	{
		if (!json_is_integer(json_object_get(rec, "value")) ||
		    json_integer_value(json_object_get(rec, "value")) !=
			first + (int64_t)i ||
		    !json_is_integer(json_object_get(rec, "seq")) ||
		    !json_is_boolean(json_object_get(rec, "duplicate")))
			return 0;
	}
	return 1;
}

/*
 * Check answer_parse_record on data for values first..first+n-1 (which
 * counterd never lets pass INT64_MAX), against the document as jansson reads
 * it.
 */
static void
fuzz_record(const char *data, size_t size, json_t *doc, int64_t first, size_t n)
{
	char why[256];
	int64_t dup = -1, want = 0;
	json_t *recs, *rec;
	size_t i;

	why[0] = '\0';
	if (answer_parse_record(data, size, "test:default", first, n, &dup, why,
				sizeof why) != 0) {
		FUZZ_CHECK(why[0] != '\0' && !fuzz_record_ok(doc, first, n));
		return;
	}
	FUZZ_CHECK(fuzz_record_ok(doc, first, n));
	recs = json_object_get(doc, "records");
	FUZZ_CHECK(json_is_array(recs) && json_array_size(recs) == n);
	for (i = 0; i < n; i++) {
		rec = json_array_get(recs, i);
		FUZZ_CHECK(json_integer_value(json_object_get(rec, "value")) ==
			   first + (int64_t)i);
		if (json_is_true(json_object_get(rec, "duplicate")))
			want = first + (int64_t)i;
	}
	FUZZ_CHECK(dup == want);
	FUZZ_CHECK(dup == 0 || (dup >= first && dup - first < (int64_t)n));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	char why[256];
	int64_t last = -1, first = 1;
	json_t *doc, *recs, *v;
	size_t n = size > 0 ? data[0] % 8 : 0;

	doc = json_loadb(body, size, JSON_REJECT_DUPLICATES, NULL);
	/* Some count and first value, and those the answer itself gives. */
	fuzz_record(body, size, doc, 1, n);
	recs = json_object_get(doc, "records");
	if (json_is_array(recs) && json_array_size(recs) > 0) {
		n = json_array_size(recs);
		v = json_object_get(json_array_get(recs, 0), "value");
		if (json_is_integer(v) && json_integer_value(v) >= 1 &&
		    (uint64_t)json_integer_value(v) - 1 <= INT64_MAX - n)
			first = json_integer_value(v);
		fuzz_record(body, size, doc, first, n);
	}

	why[0] = '\0';
	if (answer_parse_client(body, size, "test:default", &last, why,
				sizeof why) == 0) {
		v = json_object_get(doc, "last_value");
		FUZZ_CHECK(last >= 0 && json_is_integer(v) &&
			   json_integer_value(v) == last);
	} else {
		v = json_object_get(doc, "last_value");
		FUZZ_CHECK(why[0] != '\0');
		FUZZ_CHECK(
		    !json_is_string(json_object_get(doc, "client")) ||
		    strcmp(json_string_value(json_object_get(doc, "client")),
			   "test:default") != 0 ||
		    !json_is_integer(v) || json_integer_value(v) < 0);
	}
	json_decref(doc);
	return 0;
}
