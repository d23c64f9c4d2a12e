/*
 * fuzz.h: what the libFuzzer targets (server/, client/ and util/fuzz-*.c)
 * share: the entry point and a check that keeps the failing input.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with the failed condition named: libFuzzer then keeps the input. */
#define FUZZ_CHECK(cond) do {							\
	if (!(cond)) {								\
		fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);	\
		abort();							\
	}									\
} while (0)

/* The documented client id rule (1..128 of [A-Za-z0-9._:-]), written independently of the code under test. */
static inline int
fuzz_client_ok(const char *s)
{
	static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";
	size_t n = strlen(s);

	return n >= 1 && n <= 128 && strspn(s, set) == n;
}

#endif /* FUZZ_H */
