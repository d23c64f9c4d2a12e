/*
 * failmalloc.c: an LD_PRELOAD shim for the out-of-memory tests. malloc,
 * calloc, realloc, reallocarray, posix_memalign, aligned_alloc and memalign
 * fail with ENOMEM, as when memory runs out, under control of the
 * environment; everything else reaches the real allocator (glibc's own
 * strdup, asprintf, ... call malloc through this one):
 *
 *   FAILMALLOC_AFTER=N     the first N allocations succeed (default 0)
 *   FAILMALLOC_PPM=P       after that, each fails with probability P/1000000
 *                          (default 1000000: every one)
 *   FAILMALLOC_SEED=S      the pseudo-random sequence (default 1)
 *   FAILMALLOC_FILE=PATH   fail only while PATH exists (looked at every few
 *                          milliseconds, not per allocation)
 *   FAILMALLOC_THREADS=W   "main" (the thread whose id is the process's) or
 *                          "others"; default every thread
 *   FAILMALLOC_MIN_SIZE=B  fail only allocations of at least B bytes (default
 *                          0: any): a buffer's growth, not the small
 *                          allocations around it, so one path is reached
 *                          whatever the order of the others
 *   FAILMALLOC_SPARE=NAME  never fail an allocation called from the code of a
 *                          library whose path contains NAME (e.g.
 *                          libmicrohttpd: its own failures are its own)
 *   FAILMALLOC_BACKTRACE=1 write the stack of each failed allocation to
 *                          stderr (for debugging: backtrace(3) is not
 *                          async-signal-safe)
 *
 * At exit it writes "failmalloc: N of M allocations failed" to stderr, and
 * how many of them were called from FAILMALLOC_SPARE's library (spared).
 *
 * Safe in threads and signal handlers: the state is atomics and
 * initial-exec thread-locals, the only system calls are clock_gettime and
 * access. dlsym may allocate while the real functions are looked up; those
 * allocations come from a static buffer and are never freed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
void *reallocarray(void *p, size_t n, size_t size);
void free(void *p);
int posix_memalign(void **out, size_t align, size_t n);
void *aligned_alloc(size_t align, size_t n);
void *memalign(size_t align, size_t n);

#define TLS __attribute__((tls_model("initial-exec"))) __thread
#define FILE_CHECK_NS 2000000   /* FAILMALLOC_FILE is looked at this often */

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

/* The bootstrap heap: what dlsym asks for while the real functions are looked up. */
static _Alignas(16) char boot_heap[65536];
static size_t boot_used;
static int resolving;

static int configured;
static uint64_t fail_after;
static uint64_t fail_ppm = 1000000;
static uint64_t fail_seed = 1;
static uint64_t fail_min_size;
static const char *fail_file;
static int fail_threads;        /* 0 every thread, 1 main only, 2 others only */
static int fail_backtrace;
static uintptr_t spare_lo[8], spare_hi[8];      /* FAILMALLOC_SPARE's code */
static int nspare;
static pid_t main_pid;

static uint64_t n_calls;        /* atomics from here */
static uint64_t n_failed;
static uint64_t n_spared;
static int file_present;
static int64_t file_checked_ns = -1;

static TLS int thread_kind;     /* 0 unknown, 1 main, 2 other */

/* A bump allocation from the bootstrap heap (size kept in front of it), or NULL. */
static void *
boot_alloc(size_t n)
{
	size_t need = ((n + 15) & ~(size_t)15) + 16, at;
	char *p;

	at = __atomic_fetch_add(&boot_used, need, __ATOMIC_RELAXED);
	if (at + need > sizeof boot_heap)
		return NULL;
	p = boot_heap + at;
	memcpy(p, &n, sizeof n);
	return p + 16;
}

static int
is_boot(const void *p)
{
	return (const char *)p >= boot_heap && (const char *)p < boot_heap + sizeof boot_heap;
}

/* A decimal number from the environment, or def. */
static uint64_t
env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);

	return s != NULL && *s != '\0' ? strtoull(s, NULL, 10) : def;
}

/* Note the executable segments of the libraries FAILMALLOC_SPARE names. */
static int
spare_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	const char *name = arg;
	int i;

	if (info->dlpi_name == NULL || strstr(info->dlpi_name, name) == NULL)
		return 0;
	for (i = 0; i < info->dlpi_phnum && nspare < 8; i++)
		if (info->dlpi_phdr[i].p_type == PT_LOAD && (info->dlpi_phdr[i].p_flags & PF_X)) {
			spare_lo[nspare] = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
			spare_hi[nspare] = spare_lo[nspare] + info->dlpi_phdr[i].p_memsz;
			nspare++;
		}
	return 0;
}

/* Look up the real functions and read the environment (once; first caller wins, others wait). */
static void
resolve(void)
{
	static int state;               /* 0 not yet, 1 in progress, 2 done */
	const char *s;
	int zero = 0;

	if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == 2)
		return;
	if (!__atomic_compare_exchange_n(&state, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != 2)
			;
		return;
	}
	__atomic_store_n(&resolving, 1, __ATOMIC_RELEASE);
	real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
	real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
	real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
	real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
	real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
	real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
	fail_after = env_u64("FAILMALLOC_AFTER", 0);
	fail_ppm = env_u64("FAILMALLOC_PPM", 1000000);
	fail_seed = env_u64("FAILMALLOC_SEED", 1);
	fail_min_size = env_u64("FAILMALLOC_MIN_SIZE", 0);
	if ((s = getenv("FAILMALLOC_FILE")) != NULL && *s != '\0')
		fail_file = s;
	if ((s = getenv("FAILMALLOC_THREADS")) != NULL)
		fail_threads = strcmp(s, "main") == 0 ? 1 : strcmp(s, "others") == 0 ? 2 : 0;
	main_pid = getpid();
	fail_backtrace = env_u64("FAILMALLOC_BACKTRACE", 0) != 0;
	if ((s = getenv("FAILMALLOC_SPARE")) != NULL && *s != '\0')
		dl_iterate_phdr(spare_cb, (void *)s);
	configured = getenv("FAILMALLOC_AFTER") != NULL || getenv("FAILMALLOC_PPM") != NULL || fail_file != NULL ||
	    fail_min_size != 0;
	__atomic_store_n(&resolving, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&state, 2, __ATOMIC_RELEASE);
}

/* splitmix64: the k-th number of the sequence of seed. */
static uint64_t
mix(uint64_t k)
{
	uint64_t z = k * 0x9e3779b97f4a7c15ULL + fail_seed * 0xbf58476d1ce4e5b9ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Does FAILMALLOC_FILE exist (as of at most FILE_CHECK_NS ago)? */
static int
file_armed(void)
{
	struct timespec ts;
	int64_t now, last;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	last = __atomic_load_n(&file_checked_ns, __ATOMIC_RELAXED);
	if (last < 0 || now - last >= FILE_CHECK_NS) {
		__atomic_store_n(&file_checked_ns, now, __ATOMIC_RELAXED);
		__atomic_store_n(&file_present, access(fail_file, F_OK) == 0, __ATOMIC_RELAXED);
	}
	return __atomic_load_n(&file_present, __ATOMIC_RELAXED);
}

/* Write the caller's stack to stderr (no allocation once backtrace(3) is loaded, in failmalloc_init). */
static void
trace(void)
{
	void *pc[24];
	int n = backtrace(pc, 24);

	if (write(2, "failmalloc: failing\n", 20) < 0)
		return;
	backtrace_symbols_fd(pc, n, 2);
}

/* Should this allocation of n bytes, called from pc, fail? Counts it either way. */
static int
should_fail(void *pc, size_t n)
{
	uint64_t k;
	int i;

	if (!configured)
		return 0;
	k = __atomic_fetch_add(&n_calls, 1, __ATOMIC_RELAXED);
	if (k < fail_after || n < fail_min_size)
		return 0;
	if (fail_threads != 0) {
		if (thread_kind == 0)
			thread_kind = (pid_t)syscall(SYS_gettid) == main_pid ? 1 : 2;
		if (thread_kind != fail_threads)
			return 0;
	}
	if (fail_file != NULL && !file_armed())
		return 0;
	if (fail_ppm < 1000000 && mix(k) % 1000000 >= fail_ppm)
		return 0;
	for (i = 0; i < nspare; i++)
		if ((uintptr_t)pc >= spare_lo[i] && (uintptr_t)pc < spare_hi[i]) {
			__atomic_fetch_add(&n_spared, 1, __ATOMIC_RELAXED);
			return 0;
		}
	__atomic_fetch_add(&n_failed, 1, __ATOMIC_RELAXED);
	if (fail_backtrace)
		trace();
	errno = ENOMEM;
	return 1;
}

void *
malloc(size_t n)
{
	if (__atomic_load_n(&resolving, __ATOMIC_ACQUIRE))
		return boot_alloc(n);
	resolve();
	if (should_fail(__builtin_return_address(0), n))
		return NULL;
	return real_malloc(n);
}

void *
calloc(size_t n, size_t size)
{
	void *p;

	if (__atomic_load_n(&resolving, __ATOMIC_ACQUIRE)) {
		if (size != 0 && n > SIZE_MAX / size)
			return NULL;
		if ((p = boot_alloc(n * size)) != NULL)
			memset(p, 0, n * size);     /* the heap is zeroed, but be plain about it */
		return p;
	}
	resolve();
	if (should_fail(__builtin_return_address(0), size != 0 && n > SIZE_MAX / size ? SIZE_MAX : n * size))
		return NULL;
	return real_calloc(n, size);
}

void *
realloc(void *p, size_t n)
{
	size_t old;
	void *q;

	if (p != NULL && is_boot(p)) {
		/* Moved out of the bootstrap heap: copy what it had. */
		memcpy(&old, (char *)p - 16, sizeof old);
		if ((q = malloc(n)) != NULL)
			memcpy(q, p, old < n ? old : n);
		return q;
	}
	if (__atomic_load_n(&resolving, __ATOMIC_ACQUIRE))
		return p == NULL ? boot_alloc(n) : NULL;
	resolve();
	if (n != 0 && should_fail(__builtin_return_address(0), n))
		return NULL;
	return real_realloc(p, n);
}

void *
reallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * size);
}

void
free(void *p)
{
	if (p == NULL || is_boot(p))
		return;
	resolve();
	real_free(p);
}

int
posix_memalign(void **out, size_t align, size_t n)
{
	resolve();
	if (should_fail(__builtin_return_address(0), n))
		return ENOMEM;
	return real_posix_memalign(out, align, n);
}

void *
aligned_alloc(size_t align, size_t n)
{
	resolve();
	if (should_fail(__builtin_return_address(0), n))
		return NULL;
	return real_aligned_alloc(align, n);
}

void *
memalign(size_t align, size_t n)
{
	resolve();
	if (should_fail(__builtin_return_address(0), n))
		return NULL;
	return real_memalign(align, n);
}

/* Look the real functions up before main, while the process has one thread. */
__attribute__((constructor)) static void
failmalloc_init(void)
{
	void *pc[2];

	resolve();
	if (fail_backtrace)
		backtrace(pc, 2);       /* loads libgcc_s now, not while an allocation fails */
}

/* Say how many allocations failed (write(2) only: the allocator may be out). */
__attribute__((destructor)) static void
failmalloc_report(void)
{
	char line[128];
	int len;

	if (!configured)
		return;
	len = snprintf(line, sizeof line, "failmalloc: %llu of %llu allocations failed, %llu spared\n",
	    (unsigned long long)__atomic_load_n(&n_failed, __ATOMIC_RELAXED),
	    (unsigned long long)__atomic_load_n(&n_calls, __ATOMIC_RELAXED),
	    (unsigned long long)__atomic_load_n(&n_spared, __ATOMIC_RELAXED));
	if (len > 0 && write(2, line, (size_t)len) < 0)
		return;
}
