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

/* Parse "250ms", "1s", "1.5s", "2m", "0" into milliseconds (at most one day). */
int
parse_duration_ms(const char *s, uint64_t *ms, const char **why)
{
	const uint64_t limit = 24ULL * 3600 * 1000;
	uint64_t whole = 0, frac = 0, fracdiv = 1, unit;
	const char *p = s;

	*why = "is not a duration (e.g. 250ms, 1s, 1.5s)";
	if (s == NULL || !isdigit((unsigned char)*p))
		return -1;
	while (isdigit((unsigned char)*p)) {
		whole = whole * 10 + (uint64_t)(*p++ - '0');
		if (whole > limit)
			goto range;
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p)) {
			if (fracdiv < 1000000) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				fracdiv *= 10;
			}
			p++;
		}
	}
	if (strcmp(p, "ms") == 0)
		unit = 1;
	else if (strcmp(p, "s") == 0)
		unit = 1000;
	else if (strcmp(p, "m") == 0)
		unit = 60000;
	else if (*p == '\0' && whole == 0 && frac == 0)
		unit = 1;
	else
		return -1;
	/* whole * unit cannot overflow (whole <= limit, unit <= 60000); the fraction may still cross the limit. */
	if (whole * unit + (frac * unit) / fracdiv > limit)
		goto range;
	*ms = whole * unit + (frac * unit) / fracdiv;
	return 0;
range:
	*why = "is out of range (at most 86400s, one day)";
	return -1;
}
