/*
 * test-parse.c: unit tests of counterd's parsers (names, routes, --server
 * URLs, record-countd's answers), with cmocka.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "client.h"

static void
test_names(void **state)
{
	char long65[66];

	assert_true(name_valid("a", 1));
	assert_true(name_valid("A-z_0.9", 7));
	assert_false(name_valid("", 0));
	assert_false(name_valid("b@d", 3));
	assert_false(name_valid("sp ace", 6));
	assert_false(name_valid("caf\xc3\xa9", 5));
	memset(long65, 'x', 65);
	long65[65] = '\0';
	assert_true(name_valid(long65, 64));
	assert_false(name_valid(long65, 65));
	assert_true(client_id_valid("host:1.example"));
	assert_false(client_id_valid(""));
	assert_false(client_id_valid("a b"));
}

static void
test_routes(void **state)
{
	char name[COUNTER_NAME_MAX + 1];

	assert_int_equal(
	    route_match("/counters/abc/next", "/counters/*/next", name),
	    ROUTE_YES);
	assert_string_equal(name, "abc");
	assert_int_equal(
	    route_match("/counters/abc/next?x=1", "/counters/*/next", name),
	    ROUTE_YES);
	assert_int_equal(route_match("/counters/abc", "/counters/*/next", name),
			 ROUTE_NO);
	assert_int_equal(route_match("/counters/abc/next", "/counters/*", name),
			 ROUTE_NO);
	assert_int_equal(
	    route_match("/counters/b%40d/next", "/counters/*/next", name),
	    ROUTE_BADNAME);
	assert_int_equal(
	    route_match("/counters//next", "/counters/*/next", name), ROUTE_NO);
	assert_int_equal(route_match("/next", "/next", name), ROUTE_YES);
	assert_int_equal(route_match("/nextx", "/next", name), ROUTE_NO);
	assert_int_equal(route_match("/nex", "/next", name), ROUTE_NO);
	assert_int_equal(route_match("next", "/next", name), ROUTE_NO);
	assert_int_equal(route_match("", "/next", name), ROUTE_NO);
	assert_int_equal(route_match(NULL, "/next", name), ROUTE_NO);
}

static void
test_urls(void **state)
{
	struct server_url u;
	const char *why = NULL;

	assert_int_equal(server_url_parse("http://127.0.0.1:8080", &u, &why),
			 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 8080);
	assert_true(u.numeric);
	assert_int_equal(server_url_parse("http://[::1]:9/", &u, &why), 0);
	assert_string_equal(u.host, "::1");
	assert_true(u.ipv6 && u.numeric);
	assert_int_equal(u.port, 9);
	assert_int_equal(server_url_parse("http://localhost:80", &u, &why), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(server_url_parse("http://records.example", &u, &why),
			 0);
	assert_false(u.numeric);
	assert_int_equal(u.port, 80);
	assert_int_equal(server_url_parse("https://x", &u, &why), -1);
	assert_int_equal(server_url_parse("http://x:0", &u, &why), -1);
	assert_int_equal(server_url_parse("http://x:65536", &u, &why), -1);
	assert_int_equal(server_url_parse("http://x:80/path", &u, &why), -1);
	assert_int_equal(server_url_parse("http://[::1", &u, &why), -1);
	assert_int_equal(server_url_parse("http://[zz]:1", &u, &why), -1);
	assert_int_equal(server_url_parse("http://", &u, &why), -1);
	assert_int_equal(server_url_parse("http://a b:1", &u, &why), -1);
	assert_non_null(why);
}

static void
test_answers(void **state)
{
	const char *ok = "{\"client\": \"t:c\", \"records\": [{\"value\": 5, "
			 "\"seq\": 1, \"duplicate\": false},"
			 " {\"value\": 6, \"seq\": 2, \"duplicate\": true}]}";
	const char *cl =
	    "{\"client\": \"t:c\", \"last_value\": 41, \"recorded\": 41}";
	const char *fresh = "{\"client\": \"t:c\", \"records\": [{\"value\": 5, "
			    "\"seq\": 1, \"duplicate\": false}]}";
	const char *nodup = "{\"client\": \"t:c\", \"records\": [{\"value\": 5, "
			    "\"seq\": 1}]}";
	const char *badtype = "{\"client\": \"t:c\", \"records\": [{\"value\": "
			      "5, \"seq\": 1, \"duplicate\": \"no\"}]}";
	const char *neg = "{\"client\": \"t:c\", \"last_value\": -1}";
	char why[256];
	int64_t last = -1, dup = -1;

	assert_int_equal(
	    answer_parse_record(ok, strlen(ok), "t:c", 5, 2, &dup, why, sizeof why),
	    0);
	assert_int_equal(dup, 6); /* the highest value acknowledged as a duplicate */
	assert_int_equal(answer_parse_record(fresh, strlen(fresh), "t:c", 5, 1,
					     &dup, why, sizeof why),
			 0);
	assert_int_equal(dup, 0);
	assert_int_equal(answer_parse_record(nodup, strlen(nodup), "t:c", 5, 1,
					     &dup, why, sizeof why),
			 -1);
	assert_non_null(strstr(why, "duplicate"));
	assert_int_equal(answer_parse_record(badtype, strlen(badtype), "t:c", 5,
					     1, &dup, why, sizeof why),
			 -1);
	assert_int_equal(
	    answer_parse_record(ok, strlen(ok), "t:c", 5, 3, &dup, why, sizeof why),
	    -1);
	assert_int_equal(
	    answer_parse_record(ok, strlen(ok), "t:c", 4, 2, &dup, why, sizeof why),
	    -1);
	assert_int_equal(
	    answer_parse_record(ok, strlen(ok), "t:d", 5, 2, &dup, why, sizeof why),
	    -1);
	assert_int_equal(
	    answer_parse_record("{", 1, "t:c", 5, 2, &dup, why, sizeof why), -1);
	assert_non_null(strstr(why, "invalid JSON"));
	assert_int_equal(
	    answer_parse_client(cl, strlen(cl), "t:c", &last, why, sizeof why),
	    0);
	assert_int_equal(last, 41);
	assert_int_equal(answer_parse_client(neg, strlen(neg), "t:c", &last,
					     why, sizeof why),
			 -1);
	assert_int_equal(
	    answer_parse_client("[]", 2, "t:c", &last, why, sizeof why), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_urls),
	    cmocka_unit_test(test_answers),
	};

	return cmocka_run_group_tests_name("client parsers", tests, NULL, NULL);
}
