/*
 * test-input.c: record-countd's request parsing (server/input.c): what a
 * client is told when its query or body is refused.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server.h"

/* Refuse "value=<n bytes>" and return the message. */
static const char *
refused_value(size_t n, struct input_error *err)
{
	char qs[128], client[LIMIT_CLIENT + 1];
	uint64_t value;

	assert_true(n + 7 < sizeof qs);
	memcpy(qs, "value=", 6);
	memset(qs + 6, 'x', n);
	qs[6 + n] = '\0';
	assert_int_equal(
	    input_record_query(qs, strlen(qs), client, &value, err), -1);
	assert_string_equal(err->code, "invalid_value");
	return err->message;
}

/* A refused value of up to 43 bytes is quoted whole; a longer one is cut to 40
 * and "...". */
static void
test_shown_value(void **state)
{
	struct input_error err;
	char want[64];

	(void)state;
	snprintf(want, sizeof want, "\"%.42s\"",
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	assert_non_null(strstr(refused_value(42, &err), want));
	/* 43 bytes fit: found by fuzz-query, they were shown as 40 and "...".
	 */
	snprintf(want, sizeof want, "\"%.43s\"",
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	assert_non_null(strstr(refused_value(43, &err), want));
	snprintf(want, sizeof want, "\"%.40s...\"",
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	assert_non_null(strstr(refused_value(44, &err), want));
	assert_non_null(strstr(refused_value(100, &err), want));
}

/* The same for a refused client id. */
static void
test_shown_client(void **state)
{
	char qs[128], client[LIMIT_CLIENT + 1];
	struct input_error err;
	uint64_t value;

	(void)state;
	snprintf(qs, sizeof qs, "value=1&client=%.42s%%40",
		 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq");
	assert_int_equal(
	    input_record_query(qs, strlen(qs), client, &value, &err), -1);
	assert_string_equal(err.code, "invalid_client");
	assert_non_null(strstr(
	    err.message, "\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnop@\""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_shown_value),
	    cmocka_unit_test(test_shown_client),
	};

	return cmocka_run_group_tests_name("input", tests, NULL, NULL);
}
