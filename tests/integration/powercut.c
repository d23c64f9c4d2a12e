/*
 * powercut.c: an LD_PRELOAD shim for the power-loss tests. Beside every file
 * under $POWERCUT_DIR it keeps, in $POWERCUT_SHADOW, what the disk would hold
 * if the power went off at this instant: kill -9 the process at any moment
 * and the shadow files are what a reboot would find.
 *
 * The model, kept simple on purpose:
 *
 * - A file's durable contents are its shadow file, named after its path
 *   below $POWERCUT_DIR ('/' written as '%'). A file that existed before
 *   its first open in this process starts as a copy of its contents; a file
 *   the process creates starts empty.
 * - Every change made through a tracked fd (write, pwrite, pwrite64, writev,
 *   ftruncate, ftruncate64, fallocate, posix_fallocate) is, once the call has
 *   returned, numbered and kept as pending on the file's inode, its bytes
 *   copied. Pending changes live in the page cache only: a power cut loses
 *   them all.
 * - When fsync or fdatasync of any fd of that inode returns 0, every pending
 *   change numbered before that call began is applied to the shadow, in
 *   order; changes that completed while it ran stay pending (they may or may
 *   not have made it, so they count as lost). A failed sync makes nothing
 *   durable. sync_file_range is not interposed: it never makes anything
 *   durable (no metadata, no disk cache flush), so it changes nothing here.
 * - A created file has a durable name only once fsync or fdatasync of its
 *   directory, begun after the creation, returns: until then its shadow is
 *   called NAME.nodirent, which recovery does not look for.
 *
 * Simplifications: a power cut loses every pending change, where a real disk
 * may keep some and lose others (reordered, torn): the outcome that shows a
 * missing or misordered sync, not every outcome SQLite must survive. unlink
 * is durable at once (the shadow goes); rename, link, dup, O_TRUNC of an
 * existing file not yet seen, writes through mmap and stdio are not
 * modelled. The -shm file is not tracked: SQLite rebuilds it on recovery, and
 * writes it through mmap. One process per $POWERCUT_DIR: a second would
 * start its shadows again from the files' contents.
 *
 * These are the calls SQLite's unix VFS makes (nm -D libsqlite3.so: open64,
 * pwrite64, write, ftruncate64, fdatasync, close, unlink; no fallocate) and
 * record-countd's own (open, fsync, fdatasync, close). One mutex guards
 * everything; it is never held across a sync or a write of the program's.
 * $POWERCUT_SHADOW/powercut.log says what each sync made durable, and
 * $POWERCUT_SYNC_DELAY_US makes every sync of a tracked fd that much slower,
 * as a slower disk would, to widen the windows a misordered sync leaves.
 * Once the file $POWERCUT_CUT_FILE exists, the next sync of a tracked fd
 * kills the process (SIGKILL) after its delay, before it reaches the disk:
 * a power cut while a sync is in flight.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POWERCUT_MAXFD 65536

enum { POWERCUT_WRITE, POWERCUT_TRUNCATE, POWERCUT_EXTEND };

/* One change not yet durable. */
struct powercut_op {
	struct powercut_op *next;
	uint64_t seq;                 /* when it completed */
	int kind;
	off_t off;                    /* where the bytes go; the size, for truncate and extend */
	size_t len;
	unsigned char data[];
};

/* One tracked inode: a regular file with its shadow, or a directory. */
struct powercut_file {
	struct powercut_file *next;
	dev_t dev;
	ino_t ino;
	int isdir;
	int dead;                     /* unlinked: no longer tracked */
	char *path;                   /* its real path */
	char *name;                   /* its path below the root, as in the log */
	char *shadow;                 /* its shadow's path once its name is durable */
	char *nodirent;               /* its shadow's path until then, or NULL */
	uint64_t created;             /* when it was created (0: it existed) */
	int sfd;                      /* the shadow, open for writing */
	struct powercut_op *ops;      /* pending, oldest first */
	struct powercut_op **ops_tail;
};

static pthread_once_t powercut_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t powercut_mu = PTHREAD_MUTEX_INITIALIZER;
static char *powercut_root;           /* realpath of $POWERCUT_DIR, or NULL: track nothing */
static char *powercut_shadowdir;
static int powercut_logfd = -1;
static useconds_t powercut_delay;     /* $POWERCUT_SYNC_DELAY_US: added to every sync */
static char *powercut_cutfile;        /* $POWERCUT_CUT_FILE: its existence cuts the power */
static uint64_t powercut_seq;         /* changes and creations so far */
static struct powercut_file *powercut_files;
static struct powercut_file *powercut_fds[POWERCUT_MAXFD];

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);

/* Say what went wrong and stop the process: a model that cannot keep up must not pass quietly. */
static void
powercut_fatal(const char *what, const char *arg)
{
	char line[PATH_MAX + 200];
	int n;

	n = snprintf(line, sizeof line, "powercut: %s%s%s\n", what, arg != NULL ? ": " : "", arg != NULL ? arg : "");
	if (real_write != NULL && n > 0)
		real_write(2, line, (size_t)n);
	abort();
}

/* Look up the next definition of name (libc's, or the sanitizer's in front of it). */
static void *
powercut_next(const char *name)
{
	void *p;

	if ((p = dlsym(RTLD_NEXT, name)) == NULL)
		powercut_fatal("no next definition of", name);
	return p;
}

/* Resolve the real calls and read the environment, once. */
static void
powercut_init(void)
{
	const char *dir, *shadow, *delay, *cut;
	char *log;

	real_write = powercut_next("write");
	real_open = powercut_next("open");
	real_open64 = powercut_next("open64");
	real_openat = powercut_next("openat");
	real_close = powercut_next("close");
	real_pwrite = powercut_next("pwrite");
	real_pwrite64 = powercut_next("pwrite64");
	real_writev = powercut_next("writev");
	real_ftruncate = powercut_next("ftruncate");
	real_ftruncate64 = powercut_next("ftruncate64");
	real_fallocate = powercut_next("fallocate");
	real_fallocate64 = powercut_next("fallocate64");
	real_posix_fallocate = powercut_next("posix_fallocate");
	real_posix_fallocate64 = powercut_next("posix_fallocate64");
	real_fsync = powercut_next("fsync");
	real_fdatasync = powercut_next("fdatasync");
	real_unlink = powercut_next("unlink");
	real_unlinkat = powercut_next("unlinkat");
	if ((dir = getenv("POWERCUT_DIR")) == NULL || *dir == '\0')
		return;
	if ((delay = getenv("POWERCUT_SYNC_DELAY_US")) != NULL)
		powercut_delay = (useconds_t)strtoul(delay, NULL, 10);
	if ((cut = getenv("POWERCUT_CUT_FILE")) != NULL && *cut != '\0' && (powercut_cutfile = strdup(cut)) == NULL)
		powercut_fatal("out of memory", NULL);
	if ((shadow = getenv("POWERCUT_SHADOW")) == NULL || *shadow == '\0')
		powercut_fatal("POWERCUT_DIR is set but POWERCUT_SHADOW is not", NULL);
	if ((powercut_root = realpath(dir, NULL)) == NULL)
		powercut_fatal("POWERCUT_DIR does not exist", dir);
	if ((powercut_shadowdir = realpath(shadow, NULL)) == NULL)
		powercut_fatal("POWERCUT_SHADOW does not exist", shadow);
	if (strncmp(powercut_shadowdir, powercut_root, strlen(powercut_root)) == 0)
		powercut_fatal("POWERCUT_SHADOW must not be under POWERCUT_DIR", shadow);
	if (asprintf(&log, "%s/powercut.log", powercut_shadowdir) < 0)
		powercut_fatal("out of memory", NULL);
	if ((powercut_logfd = real_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) == -1)
		powercut_fatal("cannot open its log", log);
	free(log);
}

/* Append one line to the log (under the mutex). */
static void
powercut_log(const char *fmt, ...)
{
	char line[PATH_MAX + 200];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n > 0)
		real_write(powercut_logfd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Is fd one we track? Cheap and lock-free, for the calls every socket makes. */
static int
powercut_tracked(int fd)
{
	return fd >= 0 && fd < POWERCUT_MAXFD && __atomic_load_n(&powercut_fds[fd], __ATOMIC_ACQUIRE) != NULL;
}

/* Write all of buf at off in fd with the real pwrite; 0 or -1. */
static int
powercut_pwrite_all(int fd, const unsigned char *buf, size_t len, off_t off)
{
	ssize_t n;

	while (len > 0) {
		if ((n = real_pwrite(fd, buf, len, off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Copy the contents of the file at path into the shadow fd sfd. */
static void
powercut_copy(const char *path, int sfd)
{
	unsigned char buf[65536];
	off_t off = 0;
	ssize_t n;
	int fd;

	if ((fd = real_open(path, O_RDONLY | O_CLOEXEC)) == -1)
		powercut_fatal("cannot read the file to copy it", path);
	while ((n = read(fd, buf, sizeof buf)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 || powercut_pwrite_all(sfd, buf, (size_t)n, off) == -1)
			powercut_fatal("cannot copy the file into its shadow", path);
		off += n;
	}
	real_close(fd);
}

/* Start tracking the inode at path (under the mutex); existed says whether it was there before this open. */
static struct powercut_file *
powercut_add(const char *path, const struct stat *sb, int existed)
{
	struct powercut_file *f;
	const char *rel;
	char *p;

	if ((f = calloc(1, sizeof *f)) == NULL || (f->path = strdup(path)) == NULL)
		powercut_fatal("out of memory", NULL);
	f->dev = sb->st_dev;
	f->ino = sb->st_ino;
	f->isdir = S_ISDIR(sb->st_mode);
	f->sfd = -1;
	f->ops_tail = &f->ops;
	rel = path[strlen(powercut_root)] == '/' ? path + strlen(powercut_root) + 1 : ".";
	if ((f->name = strdup(rel)) == NULL)
		powercut_fatal("out of memory", NULL);
	for (p = f->name; *p != '\0'; p++)
		if (*p == '/')
			*p = '%';
	if (!f->isdir) {
		if (asprintf(&f->shadow, "%s/%s", powercut_shadowdir, f->name) < 0 ||
		    (!existed && asprintf(&f->nodirent, "%s.nodirent", f->shadow) < 0))
			powercut_fatal("out of memory", NULL);
		if ((f->sfd = real_open(existed ? f->shadow : f->nodirent, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0644)) == -1)
			powercut_fatal("cannot create a shadow file", existed ? f->shadow : f->nodirent);
		if (existed)
			powercut_copy(path, f->sfd);
		else
			f->created = ++powercut_seq;
		powercut_log("%s %s #%llu\n", existed ? "copy" : "create", f->name, (unsigned long long)powercut_seq);
	}
	f->next = powercut_files;
	powercut_files = f;
	return f;
}

/* After an open returned fd: track it if it names a file or directory under the root. */
static void
powercut_opened(int fd, int existed)
{
	struct powercut_file *f;
	char proc[64], path[PATH_MAX];
	struct stat sb;
	size_t rootlen;
	ssize_t n;
	int e = errno;

	if (fd < 0 || powercut_root == NULL)
		return;
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	if ((n = readlink(proc, path, sizeof path - 1)) == -1)
		goto out;
	path[n] = '\0';
	rootlen = strlen(powercut_root);
	if (strncmp(path, powercut_root, rootlen) != 0 || (path[rootlen] != '/' && path[rootlen] != '\0'))
		goto out;
	if (n > 4 && strcmp(path + n - 4, "-shm") == 0)
		goto out;
	if (fstat(fd, &sb) == -1 || (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)))
		goto out;
	if (fd >= POWERCUT_MAXFD)
		powercut_fatal("fd too high to track", path);
	pthread_mutex_lock(&powercut_mu);
	for (f = powercut_files; f != NULL; f = f->next)
		if (!f->dead && f->dev == sb.st_dev && f->ino == sb.st_ino)
			break;
	if (f == NULL)
		f = powercut_add(path, &sb, existed);
	__atomic_store_n(&powercut_fds[fd], f, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&powercut_mu);
out:
	errno = e;
}

/* Whether path (relative to dirfd) exists, before an open that may create it. */
static int
powercut_exists(int dirfd, const char *path, int flags)
{
	struct stat sb;
	int e = errno, rc;

	if (!(flags & O_CREAT) || powercut_root == NULL)
		return 1;
	rc = fstatat(dirfd, path, &sb, 0) == 0;
	errno = e;
	return rc;
}

/* Remember a change of kind to fd's file, once it has been made (data: len bytes for a write). */
static void
powercut_change(int fd, int kind, off_t off, const struct iovec *iov, int iovcnt, size_t len)
{
	struct powercut_file *f;
	struct powercut_op *op;
	size_t done = 0;
	int i;

	pthread_mutex_lock(&powercut_mu);
	if (fd < 0 || fd >= POWERCUT_MAXFD || (f = powercut_fds[fd]) == NULL || f->isdir || f->dead) {
		pthread_mutex_unlock(&powercut_mu);
		return;
	}
	if ((op = malloc(sizeof *op + len)) == NULL)
		powercut_fatal("out of memory", NULL);
	op->next = NULL;
	op->kind = kind;
	op->off = off;
	op->len = len;
	for (i = 0; i < iovcnt && done < len; i++) {
		size_t n = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;

		memcpy(op->data + done, iov[i].iov_base, n);
		done += n;
	}
	op->seq = ++powercut_seq;
	*f->ops_tail = op;
	f->ops_tail = &op->next;
	pthread_mutex_unlock(&powercut_mu);
}

/* Remember n bytes written from buf at off (n as the write returned it). */
static void
powercut_wrote(int fd, const void *buf, ssize_t n, off_t off)
{
	struct iovec iov;
	int e = errno;

	if (n <= 0 || !powercut_tracked(fd))
		return;
	iov.iov_base = (void *)buf;
	iov.iov_len = (size_t)n;
	powercut_change(fd, POWERCUT_WRITE, off, &iov, 1, (size_t)n);
	errno = e;
}

/* Where the n bytes a write() on fd just wrote began. */
static off_t
powercut_where(int fd, ssize_t n)
{
	off_t end;

	if ((end = lseek(fd, 0, SEEK_CUR)) == -1)
		powercut_fatal("cannot tell where a write went", NULL);
	return end - n;
}

/* Apply fd's file's pending changes made before began to its shadow (under the mutex). */
static void
powercut_apply(struct powercut_file *f, uint64_t began)
{
	struct powercut_op *op;
	struct stat sb;
	unsigned long applied = 0, left = 0;
	int rc = 0;

	while ((op = f->ops) != NULL && op->seq <= began) {
		switch (op->kind) {
		case POWERCUT_WRITE:
			rc = powercut_pwrite_all(f->sfd, op->data, op->len, op->off);
			break;
		case POWERCUT_TRUNCATE:
			rc = real_ftruncate(f->sfd, op->off);
			break;
		case POWERCUT_EXTEND:
			if ((rc = fstat(f->sfd, &sb)) == 0 && sb.st_size < op->off)
				rc = real_ftruncate(f->sfd, op->off);
			break;
		}
		if (rc != 0)
			powercut_fatal("cannot write a shadow", f->shadow);
		f->ops = op->next;
		free(op);
		applied++;
	}
	if (f->ops == NULL)
		f->ops_tail = &f->ops;
	for (op = f->ops; op != NULL; op = op->next)
		left++;
	powercut_log("sync %s %lu durable %lu pending #%llu\n", f->name, applied, left, (unsigned long long)began);
}

/* Give every file created in directory d before began its durable name (under the mutex). */
static void
powercut_dirsync(struct powercut_file *d, uint64_t began)
{
	struct powercut_file *f;
	const char *slash;

	for (f = powercut_files; f != NULL; f = f->next) {
		if (f->dead || f->nodirent == NULL || f->created > began)
			continue;
		slash = strrchr(f->path, '/');
		if ((size_t)(slash - f->path) != strlen(d->path) || strncmp(f->path, d->path, strlen(d->path)) != 0)
			continue;
		if (rename(f->nodirent, f->shadow) != 0)
			powercut_fatal("cannot name a shadow", f->shadow);
		free(f->nodirent);
		f->nodirent = NULL;
		powercut_log("dirsync %s #%llu\n", f->name, (unsigned long long)began);
	}
}

/* Run a sync of fd with real; if it succeeds, make durable what was written before it began. */
static int
powercut_sync(int fd, int (*real)(int))
{
	struct powercut_file *f = NULL;
	uint64_t began;
	int rc, e;

	pthread_mutex_lock(&powercut_mu);
	if (fd >= 0 && fd < POWERCUT_MAXFD)
		f = powercut_fds[fd];
	began = powercut_seq;
	pthread_mutex_unlock(&powercut_mu);
	if (f != NULL && powercut_delay > 0)
		usleep(powercut_delay);
	if (f != NULL && powercut_cutfile != NULL && access(powercut_cutfile, F_OK) == 0)
		kill(getpid(), SIGKILL);
	rc = real(fd);
	if (rc != 0 || f == NULL)
		return rc;
	e = errno;
	pthread_mutex_lock(&powercut_mu);
	if (!f->dead) {
		if (f->isdir)
			powercut_dirsync(f, began);
		else
			powercut_apply(f, began);
	}
	pthread_mutex_unlock(&powercut_mu);
	errno = e;
	return rc;
}

/* Stop tracking the inode sb, just unlinked; its shadow goes too. */
static void
powercut_unlinked(const struct stat *sb)
{
	struct powercut_file *f;
	struct powercut_op *op;
	int e = errno, i;

	pthread_mutex_lock(&powercut_mu);
	for (f = powercut_files; f != NULL; f = f->next)
		if (!f->dead && !f->isdir && f->dev == sb->st_dev && f->ino == sb->st_ino)
			break;
	if (f != NULL) {
		f->dead = 1;
		while ((op = f->ops) != NULL) {
			f->ops = op->next;
			free(op);
		}
		real_close(f->sfd);
		real_unlink(f->nodirent != NULL ? f->nodirent : f->shadow);
		for (i = 0; i < POWERCUT_MAXFD; i++)
			if (powercut_fds[i] == f)
				__atomic_store_n(&powercut_fds[i], NULL, __ATOMIC_RELEASE);
		powercut_log("unlink %s\n", f->name);
	}
	pthread_mutex_unlock(&powercut_mu);
	errno = e;
}

/* Unlink path (relative to dirfd) with real_unlinkat, forgetting its inode if it was tracked. */
static int
powercut_unlink(int dirfd, const char *path, int flags)
{
	struct stat sb;
	int known, e = errno, rc;

	known = powercut_root != NULL && !(flags & AT_REMOVEDIR) &&
	    fstatat(dirfd, path, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode);
	errno = e;
	if ((rc = real_unlinkat(dirfd, path, flags)) == 0 && known)
		powercut_unlinked(&sb);
	return rc;
}

/* The mode argument of an open, when its flags say there is one. */
#define POWERCUT_MODE(flags, mode) do {						\
	if ((flags) & O_CREAT || ((flags) & O_TMPFILE) == O_TMPFILE) {		\
		va_list ap;							\
		va_start(ap, flags);						\
		mode = va_arg(ap, int);						\
		va_end(ap);							\
	}									\
} while (0)

/* open(), tracking what it opens under the root. */
int
open(const char *path, int flags, ...)
{
	int mode = 0, existed, fd;

	pthread_once(&powercut_once, powercut_init);
	POWERCUT_MODE(flags, mode);
	existed = powercut_exists(AT_FDCWD, path, flags);
	fd = real_open(path, flags, mode);
	powercut_opened(fd, existed);
	return fd;
}

/* open64(), tracking what it opens under the root. */
int
open64(const char *path, int flags, ...)
{
	int mode = 0, existed, fd;

	pthread_once(&powercut_once, powercut_init);
	POWERCUT_MODE(flags, mode);
	existed = powercut_exists(AT_FDCWD, path, flags);
	fd = real_open64(path, flags, mode);
	powercut_opened(fd, existed);
	return fd;
}

/* openat(), tracking what it opens under the root. */
int
openat(int dirfd, const char *path, int flags, ...)
{
	int mode = 0, existed, fd;

	pthread_once(&powercut_once, powercut_init);
	POWERCUT_MODE(flags, mode);
	existed = powercut_exists(dirfd, path, flags);
	fd = real_openat(dirfd, path, flags, mode);
	powercut_opened(fd, existed);
	return fd;
}

/* close(): the fd's pending changes stay pending on its inode. */
int
close(int fd)
{
	pthread_once(&powercut_once, powercut_init);
	if (powercut_tracked(fd)) {
		pthread_mutex_lock(&powercut_mu);
		__atomic_store_n(&powercut_fds[fd], NULL, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&powercut_mu);
	}
	return real_close(fd);
}

/* write(), remembered as pending. */
ssize_t
write(int fd, const void *buf, size_t len)
{
	ssize_t n;

	pthread_once(&powercut_once, powercut_init);
	n = real_write(fd, buf, len);
	if (n > 0 && powercut_tracked(fd))
		powercut_wrote(fd, buf, n, powercut_where(fd, n));
	return n;
}

/* pwrite(), remembered as pending. */
ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t n;

	pthread_once(&powercut_once, powercut_init);
	n = real_pwrite(fd, buf, len, off);
	powercut_wrote(fd, buf, n, off);
	return n;
}

/* pwrite64(), remembered as pending. */
ssize_t
pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
	ssize_t n;

	pthread_once(&powercut_once, powercut_init);
	n = real_pwrite64(fd, buf, len, off);
	powercut_wrote(fd, buf, n, (off_t)off);
	return n;
}

/* writev(), remembered as pending. */
ssize_t
writev(int fd, const struct iovec *iov, int iovcnt)
{
	ssize_t n;
	int e;

	pthread_once(&powercut_once, powercut_init);
	n = real_writev(fd, iov, iovcnt);
	if (n > 0 && powercut_tracked(fd)) {
		e = errno;
		powercut_change(fd, POWERCUT_WRITE, powercut_where(fd, n), iov, iovcnt, (size_t)n);
		errno = e;
	}
	return n;
}

/* ftruncate(), remembered as pending. */
int
ftruncate(int fd, off_t len)
{
	int rc, e;

	pthread_once(&powercut_once, powercut_init);
	if ((rc = real_ftruncate(fd, len)) == 0 && powercut_tracked(fd)) {
		e = errno;
		powercut_change(fd, POWERCUT_TRUNCATE, len, NULL, 0, 0);
		errno = e;
	}
	return rc;
}

/* ftruncate64(), remembered as pending. */
int
ftruncate64(int fd, off64_t len)
{
	int rc, e;

	pthread_once(&powercut_once, powercut_init);
	if ((rc = real_ftruncate64(fd, len)) == 0 && powercut_tracked(fd)) {
		e = errno;
		powercut_change(fd, POWERCUT_TRUNCATE, (off_t)len, NULL, 0, 0);
		errno = e;
	}
	return rc;
}

/* After a successful fallocate of off..off+len on fd in mode: remember the growth, refuse what is not modelled. */
static void
powercut_allocated(int fd, int mode, off_t off, off_t len)
{
	int e = errno;

	if (!powercut_tracked(fd))
		return;
	if (mode & ~FALLOC_FL_KEEP_SIZE)
		powercut_fatal("fallocate mode not modelled", NULL);
	if (!(mode & FALLOC_FL_KEEP_SIZE))
		powercut_change(fd, POWERCUT_EXTEND, off + len, NULL, 0, 0);
	errno = e;
}

/* fallocate(), the growth remembered as pending. */
int
fallocate(int fd, int mode, off_t off, off_t len)
{
	int rc;

	pthread_once(&powercut_once, powercut_init);
	if ((rc = real_fallocate(fd, mode, off, len)) == 0)
		powercut_allocated(fd, mode, off, len);
	return rc;
}

/* fallocate64(), the growth remembered as pending. */
int
fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	int rc;

	pthread_once(&powercut_once, powercut_init);
	if ((rc = real_fallocate64(fd, mode, off, len)) == 0)
		powercut_allocated(fd, mode, (off_t)off, (off_t)len);
	return rc;
}

/* posix_fallocate(), the growth remembered as pending. */
int
posix_fallocate(int fd, off_t off, off_t len)
{
	int rc;

	pthread_once(&powercut_once, powercut_init);
	if ((rc = real_posix_fallocate(fd, off, len)) == 0)
		powercut_allocated(fd, 0, off, len);
	return rc;
}

/* posix_fallocate64(), the growth remembered as pending. */
int
posix_fallocate64(int fd, off64_t off, off64_t len)
{
	int rc;

	pthread_once(&powercut_once, powercut_init);
	if ((rc = real_posix_fallocate64(fd, off, len)) == 0)
		powercut_allocated(fd, 0, (off_t)off, (off_t)len);
	return rc;
}

/* fsync(): what was written before it began becomes durable once it returns. */
int
fsync(int fd)
{
	pthread_once(&powercut_once, powercut_init);
	return powercut_sync(fd, real_fsync);
}

/* fdatasync(): as fsync (the size is data here: SQLite and we need it back). */
int
fdatasync(int fd)
{
	pthread_once(&powercut_once, powercut_init);
	return powercut_sync(fd, real_fdatasync);
}

/* unlink(): durable at once, shadow and all. */
int
unlink(const char *path)
{
	pthread_once(&powercut_once, powercut_init);
	return powercut_unlink(AT_FDCWD, path, 0);
}

/* unlinkat(): durable at once, shadow and all. */
int
unlinkat(int dirfd, const char *path, int flags)
{
	pthread_once(&powercut_once, powercut_init);
	return powercut_unlink(dirfd, path, flags);
}
