/*
 * jmem.c: jansson's allocations, watched. jansson does not always say that
 * one failed: json_loadb may blame the token it could not copy ("invalid
 * token"), and json_dumps (2.14) drops an object key it could not append
 * and returns the rest, a document that is not JSON. A flag per thread says
 * whether an allocation failed since it was cleared.
 */
#include "config.h"

#include <stdlib.h>

#include <jansson.h>

#include "util.h"

static __thread int jmem_fail;

/* jansson's malloc: the C library's, noting a failure. */
static void *
jmem_malloc(size_t n)
{
	void *p;

	if ((p = malloc(n)) == NULL)
		jmem_fail = 1;
	return p;
}

/* Route jansson's allocations through jmem_malloc. */
void
jmem_init(void)
{
	json_set_alloc_funcs(jmem_malloc, free);
}

void
jmem_clear(void)
{
	jmem_fail = 0;
}

int
jmem_failed(void)
{
	return jmem_fail;
}

/* json_dumps, or NULL if an allocation failed on the way. */
char *
jmem_dumps(const json_t *json, size_t flags)
{
	char *text;

	jmem_fail = 0;
	if ((text = json_dumps(json, flags)) != NULL && jmem_fail) {
		free(text);
		text = NULL;
	}
	return text;
}
