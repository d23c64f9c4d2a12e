/*
 * reserve.c: libevent's allocator. The C library's, with a reserve set
 * aside at start for when it fails: libevent 2.1 does not survive every
 * failed allocation (a connection it cannot finish setting up is freed half
 * made, and event_callback_cancel_ dereferences NULL), so while the reserve
 * lasts libevent never sees one, and counterd's own code answers 503.
 *
 * The reserve is one block, handed out front to back; it is reused from the
 * front once everything taken from it is freed. Loop thread only, as
 * libevent is in counterd.
 */
#include "config.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "client.h"
#include "util.h"

#define RESERVE_SIZE (4u << 20) /* address space; pages cost memory once used */
#define RESERVE_ALIGN 16

static char *reserve;
static size_t reserve_used;     /* bytes handed out from the front */
static size_t reserve_live;     /* blocks not yet freed */
static uint64_t reserve_taken;  /* blocks handed out since start */

/* Is p a block of the reserve? */
static int
reserve_owns(const void *p)
{
	return reserve != NULL && (const char *)p >= reserve &&
	       (const char *)p < reserve + RESERVE_SIZE;
}

/* A block of n bytes from the reserve (its size in front of it), or NULL. */
static void *
reserve_take(size_t n)
{
	size_t need = ((n + RESERVE_ALIGN - 1) & ~(size_t)(RESERVE_ALIGN - 1)) +
		      RESERVE_ALIGN;
	char *p;

	if (reserve == NULL || n > RESERVE_SIZE ||
	    RESERVE_SIZE - reserve_used < need)
		return NULL;
	p = reserve + reserve_used;
	memcpy(p, &n, sizeof n);
	reserve_used += need;
	reserve_live++;
	if (reserve_taken++ == 0)
		log_warnx("out of memory: libevent draws on counterd's reserve "
			  "(%u bytes); requests answer 503 until memory is back",
			  RESERVE_SIZE);
	return p + RESERVE_ALIGN;
}

/* The size a block was asked for. */
static size_t
reserve_size(const void *p)
{
	size_t n;

	memcpy(&n, (const char *)p - RESERVE_ALIGN, sizeof n);
	return n;
}

static void *
reserve_malloc(size_t n)
{
	void *p = malloc(n);

	return p != NULL || n == 0 ? p : reserve_take(n);
}

static void
reserve_free(void *p)
{
	if (!reserve_owns(p)) {
		free(p);
		return;
	}
	if (--reserve_live == 0)
		reserve_used = 0;
}

static void *
reserve_realloc(void *p, size_t n)
{
	void *q;
	size_t old;

	if (p == NULL)
		return reserve_malloc(n);
	if (!reserve_owns(p)) {
		if ((q = realloc(p, n)) != NULL || n == 0)
			return q;
		old = malloc_usable_size(p);
	} else
		old = reserve_size(p);
	if ((q = reserve_malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	reserve_free(p);
	return q;
}

/* Set the reserve aside and give libevent its allocator; before any other libevent call. */
int
reserve_init(void)
{
	if ((reserve = malloc(RESERVE_SIZE)) == NULL)
		return -1;
	event_set_mem_functions(reserve_malloc, reserve_realloc, reserve_free);
	return 0;
}
