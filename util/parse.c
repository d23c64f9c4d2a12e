/*
 * parse.c: strict parsing of numbers and durations given on command lines.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Parse a decimal integer in [min, max] with no sign, spaces or junk. */
int
parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why)
{
	unsigned long long v;
	char *end;

	if (s == NULL || !isdigit((unsigned char)s[0])) {
		*why = "is not a whole number";
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end != '\0') {
		*why = "is not a whole number";
		return -1;
	}
	if (errno == ERANGE || v > max || v < min) {
		*why = "is out of range";
		return -1;
	}
	*out = v;
	return 0;
}

/*
 * Parse "250ms", "1s", "1.5s", "2m", "0" into milliseconds (at most one
 * day). Every digit counts: the fraction is divided out from its last digit
 * up, so the result is the exact value rounded down to a millisecond.
 */
int
parse_duration_ms(const char *s, uint64_t *ms, const char **why)
{
	const uint64_t limit = 24ULL * 3600 * 1000;
	uint64_t whole = 0, unit, carry = 0;
	const char *p = s, *dot, *end;
	int nonzero = 0;

	*why = "is not a duration (e.g. 250ms, 1s, 1.5s)";
	if (s == NULL || !isdigit((unsigned char)*p))
		return -1;
	while (isdigit((unsigned char)*p)) {
		nonzero |= *p != '0';
		whole = whole * 10 + (uint64_t)(*p++ - '0');
		if (whole > limit)
			goto range;
	}
	dot = p;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p))
			nonzero |= *p++ != '0';
	}
	end = p;
	if (strcmp(p, "ms") == 0)
		unit = 1;
	else if (strcmp(p, "s") == 0)
		unit = 1000;
	else if (strcmp(p, "m") == 0)
		unit = 60000;
	else if (*p == '\0' && !nonzero)
		unit = 1;
	else
		return -1;
	/* floor(0.d1..dk * unit), from dk up: each step stays below unit. */
	for (p = end - 1; p > dot; p--)
		carry = ((uint64_t)(*p - '0') * unit + carry) / 10;
	/* whole * unit cannot overflow (whole <= limit, unit <= 60000). */
	if (whole * unit + carry > limit)
		goto range;
	*ms = whole * unit + carry;
	/* "0.5ms" is not "0" (which means none, never or no cap for some options). */
	if (*ms == 0 && nonzero) {
		*why = "is less than 1ms (durations count whole milliseconds; 0 is written 0)";
		return -1;
	}
	return 0;
range:
	*why = "is out of range (at most 86400s, one day)";
	return -1;
}

/* The length of the valid UTF-8 sequence at p. */
size_t
parse_utf8_len(const unsigned char *p)
{
	size_t n, i;
	uint32_t c;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, c = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, c = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, c = p[0] & 0x07;
	else
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (n == 4 && (c < 0x10000 || c > 0x10ffff)))
		return 0;
	return n;
}

/* Copy s as valid UTF-8, cut at a whole character if out is too small. */
char *
parse_utf8_fix(const char *s, char *out, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0, n;

	if (len == 0)
		return out;
	while (*p != '\0') {
		n = *p < 0x80 ? 1 : parse_utf8_len(p);
		if (o + (n ? n : 3) >= len)
			break;
		if (n == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			p++;
		} else {
			memcpy(out + o, p, n);
			o += n;
			p += n;
		}
	}
	out[o] = '\0';
	return out;
}
