/*
 * fuzz-parse.c: libFuzzer target for util/parse.c, the parsers of the three
 * programs' options and environment variables (durations, whole numbers) and
 * the UTF-8 repair used on client ids in /records and /stats. Each is compared
 * with the documented rule, written here independently; the checks abort()
 * when they disagree.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "fuzz.h"

#define FUZZ_DAY_MS (24ULL * 3600 * 1000)

static int
fuzz_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * The duration rule: DIGITS[.DIGITS](ms|s|m), or a bare zero such as "0" or
 * "0.00"; the exact value rounded down to a millisecond, at most one day, and
 * not 0 unless written as zero. Returns 1 (accept, *ms set), 0 (reject) or -1
 * (more fraction digits than this reference computes exactly).
 */
static int
fuzz_duration(const char *s, uint64_t *ms)
{
	unsigned __int128 whole = 0, frac = 0, scale = 1, exact;
	const char *p = s;
	uint64_t unit;
	int nonzero = 0, k = 0;

	if (!fuzz_digit(*p))
		return 0;
	for (; fuzz_digit(*p); p++) {
		nonzero |= *p != '0';
		if (whole <= FUZZ_DAY_MS)          /* past a day it is out of range anyway */
			whole = whole * 10 + (unsigned)(*p - '0');
	}
	if (*p == '.') {
		if (!fuzz_digit(*++p))
			return 0;
		for (; fuzz_digit(*p); p++, k++) {
			nonzero |= *p != '0';
			if (k < 20) {
				frac = frac * 10 + (unsigned)(*p - '0');
				scale *= 10;
			}
		}
	}
	if (strcmp(p, "ms") == 0)
		unit = 1;
	else if (strcmp(p, "s") == 0)
		unit = 1000;
	else if (strcmp(p, "m") == 0)
		unit = 60000;
	else if (*p == '\0' && !nonzero)
		unit = 1;
	else
		return 0;
	if (whole > FUZZ_DAY_MS)
		return 0;
	if (k > 20)
		return -1;
	exact = (whole * scale + frac) * unit / scale;
	if (exact > FUZZ_DAY_MS || (exact == 0 && nonzero))
		return 0;
	*ms = (uint64_t)exact;
	return 1;
}

/* The whole-number rule: decimal digits only, value in [min, max]. */
static int
fuzz_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t n = strlen(s);

	if (n == 0 || strspn(s, "0123456789") != n)
		return 0;
	for (; *s != '\0'; s++) {
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return 0;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v < min || v > max)
		return 0;
	*out = v;
	return 1;
}

/* The length of the UTF-8 sequence of 2..4 bytes at p by RFC 3629's table, or 0. */
static size_t
fuzz_utf8(const unsigned char *p)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* Whether s is entirely valid UTF-8. */
static int
fuzz_utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n;

	for (; *p != '\0'; p += n)
		if ((n = *p < 0x80 ? 1 : fuzz_utf8(p)) == 0)
			return 0;
	return 1;
}

/* Check parse_utf8_fix into len bytes against the uncut repair full. */
static void
fuzz_utf8_fix(const char *s, const char *full, size_t len)
{
	char *cut;
	size_t c, next;

	if ((cut = malloc(len)) == NULL)
		return;
	FUZZ_CHECK(parse_utf8_fix(s, cut, len) == cut);
	c = strlen(cut);
	FUZZ_CHECK(c < len && strncmp(cut, full, c) == 0 && fuzz_utf8_valid(cut));
	/* Cut at a whole character, and only where the next one does not fit. */
	if (full[c] != '\0') {
		next = (unsigned char)full[c] < 0x80 ? 1 : fuzz_utf8((const unsigned char *)full + c);
		FUZZ_CHECK(next != 0 && c + next >= len);
	}
	free(cut);
}

/* Run one input, cut at its first NUL, through every parser of util/parse.c. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t ranges[][2] = {
		{ 0, INT64_MAX }, { 1, 1000 }, { 1, 1000000 }, { 0, 65535 }, { 0, UINT64_MAX },
	};
	char *s, *full, *again, text[32];
	const char *why;
	uint64_t ms, ms2, want, v;
	size_t i, len;
	int ref;

	if ((s = malloc(size + 1)) == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	len = strlen(s);

	/* Durations: --latency, --jitter, --wait-timeout, --timeout ... and their variables. */
	why = NULL;
	ms = 0;
	ref = fuzz_duration(s, &want);
	if (parse_duration_ms(s, &ms, &why) == 0) {
		FUZZ_CHECK(ref != 0 && ms <= FUZZ_DAY_MS);
		FUZZ_CHECK(ref == -1 || ms == want);
		snprintf(text, sizeof text, "%" PRIu64 "ms", ms);
		FUZZ_CHECK(parse_duration_ms(text, &ms2, &why) == 0 && ms2 == ms);
	} else
		FUZZ_CHECK(ref != 1 && why != NULL && why[0] != '\0');

	/* Whole numbers: --batch-max, --max-connections, ports, /records?after=&limit= ... */
	for (i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
		why = NULL;
		ref = fuzz_uint(s, ranges[i][0], ranges[i][1], &want);
		if (parse_uint(s, ranges[i][0], ranges[i][1], &v, &why) == 0)
			FUZZ_CHECK(ref == 1 && v == want);
		else
			FUZZ_CHECK(ref == 0 && why != NULL && why[0] != '\0');
	}

	/* UTF-8: parse_utf8_len at every byte, and parse_utf8_fix at several sizes. */
	for (i = 0; i < len; i++)
		FUZZ_CHECK(parse_utf8_len((const unsigned char *)s + i) == fuzz_utf8((const unsigned char *)s + i));
	if ((full = malloc(3 * len + 1)) != NULL && (again = malloc(3 * len + 1)) != NULL) {
		parse_utf8_fix(s, full, 3 * len + 1);
		FUZZ_CHECK(fuzz_utf8_valid(full));
		FUZZ_CHECK(!fuzz_utf8_valid(s) || strcmp(full, s) == 0);
		FUZZ_CHECK(strcmp(parse_utf8_fix(full, again, 3 * len + 1), full) == 0);
		FUZZ_CHECK(parse_utf8_fix(s, NULL, 0) == NULL);  /* no room, not even for the NUL: nothing written */
		fuzz_utf8_fix(s, full, 1);
		fuzz_utf8_fix(s, full, size > 0 ? (size_t)data[0] % 16 + 1 : 2);
		fuzz_utf8_fix(s, full, len + 1);
		free(again);
	}
	free(full);
	free(s);
	return 0;
}
