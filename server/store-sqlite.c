/*
 * store-sqlite.c: records in one SQLite file, WAL mode, group commit on a
 * writer thread.
 *
 * One connection for the writer thread, which alone writes, and one for each
 * of a few reader threads, which alone read. In WAL mode none blocks
 * another, so reads never wait for a commit's fsync nor for each other, and
 * the loop waits for none: it hands the writer jobs and the readers reads,
 * and collects each kind through a pipe.
 *
 * Durability is ours, not SQLite's: the writer commits with
 * synchronous=NORMAL (no fsync inside COMMIT, so the next batch can be
 * written at once) and syncer threads fdatasync the WAL behind it, several
 * syncs in flight at a time. A batch goes back to the loop, in commit order,
 * only when a sync that began after its COMMIT returned is over: its frames
 * are then on disk (or, if a checkpoint has copied them, the checkpoint
 * synced them). With --durability normal nothing is synced.
 *
 * One process per database: the store holds an flock(2) on the database
 * file (on its inode, so another path to it, a symlink or a hard link, finds
 * it too) from before anything is read until every connection is closed, and
 * refuses to open a file another process holds. Two daemons on one file
 * would each keep their own /stats. The kernel drops the lock when the
 * process ends, however it ends. SQLite's own locks are fcntl(2) locks, which
 * flock(2) does not touch; the lock's fd is closed after SQLite's, as closing
 * any fd of the file drops the process's fcntl locks on it.
 */
#include "config.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

/* fdatasync calls of the WAL in flight at most: overlapping syncs keep commits flowing. */
#define STORE_SYNCERS 2

/*
 * Reads run at once at most, each on its own thread and connection: a read
 * waits for another only when this many are running (counting the records
 * of a client with millions takes about 0.07 s a million). Few, as each
 * takes a core while it runs and keeps a page cache (up to 2 MB).
 */
#define STORE_READERS 4

/*
 * The WAL: checkpointed (passively) after each commit once it holds 1000
 * frames, as SQLite does by default. SQLite starts it again from the top only
 * when a checkpoint has copied all of it while no read held an older view,
 * so reads back to back would let it grow without bound under writes: past
 * 4096 frames (16 MB of 4 KB pages) each reader waits for that before each
 * read, at most 1 s, and no longer once 20 ms pass without a commit (then it
 * does not grow). As every reader does, the reads running then end and none
 * starts, and the next commits restart the WAL.
 */
#define STORE_WAL_CHECKPOINT_FRAMES 1000
#define STORE_WAL_READ_PAUSE_FRAMES 4096
#define STORE_WAL_READ_PAUSE_MS 1000
#define STORE_WAL_IDLE_MS 20

/*
 * The start-up scan of every client's summary: its progress callback runs
 * every this many SQLite VM steps (a few milliseconds), and it reads the
 * file through a map of at most this many bytes (SQLite caps it at its
 * SQLITE_MAX_MMAP_SIZE, 2 GB as Debian builds it; the rest is read as usual).
 */
#define STORE_TICK_STEPS 100000
#define STORE_SCAN_MMAP 1099511627776

/* The start-up scan's progress callback, for SQLite's progress handler. */
struct store_tick {
	store_progress_cb cb;
	void *arg;
};

/*
 * A page of one client's records: the (client, value) index finds them all,
 * but to take the first L by seq it has to read every one of the client's
 * records and sort them (0.7 to 1.2 s a page for a client with 10 million),
 * so paging through a big client cost the square of its size. An index on
 * (client, seq) would cost every record written (8% of the rate at latency
 * 0). Instead, a client with at least this many records per row of the page
 * asked for is read first in seq order from the table itself, this many rows
 * of it per row of the page: a page of a client that has a fair share of the
 * records (1 in 64 at least) is found there; the rest of the page comes from
 * the index, as for a small client, which costs no more than before and this
 * window besides.
 */
#define STORE_WINDOW_ROWS 64

/* One reader thread with its connection (read-only) and statements. */
struct store_reader {
	struct store *st;
	sqlite3 *db;
	sqlite3_stmt *client;
	sqlite3_stmt *client_fix;     /* its highest value in range, when max() is not */
	sqlite3_stmt *records_all;
	sqlite3_stmt *records_one;
	sqlite3_stmt *records_window; /* one client's, by seq, within a range of seq */
	sqlite3_stmt *probe;          /* has a client at least N records? */
	sqlite3_stmt *top;            /* the highest seq */
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	pthread_t thread;
};

struct store {
	sqlite3 *w;                   /* the writer thread's connection */
	sqlite3_stmt *begin;
	sqlite3_stmt *commit;
	sqlite3_stmt *insert;
	sqlite3_stmt *lookup;

	struct store_reader readers[STORE_READERS];
	int nreaders;                 /* reader threads started */
	sqlite3_stmt *clients;        /* on the first reader's connection, before reads */
	sqlite3_stmt *client_fix;     /* the same, for a client with values out of range */
	int reading;                  /* rmu and rcv are initialised */
	pthread_mutex_t rmu;          /* guards the reads' lists and rquit */
	pthread_cond_t rcv;           /* the readers wait here for reads */
	struct store_read *rpending;  /* submitted, not yet run */
	struct store_read **rpending_tail;
	struct store_read *rdone;     /* run, not yet collected */
	struct store_read **rdone_tail;
	int rquit;
	int rnotify[2];               /* one byte in the pipe while rdone is not empty */
	int wal_frames;               /* frames in the WAL after the last commit (atomic) */
	unsigned wal_commits;         /* commits so far, as the WAL hook saw them (atomic) */

	pthread_t thread;
	int threaded;
	pthread_mutex_t mu;           /* guards what follows */
	pthread_cond_t cv;            /* the writer waits here for jobs */
	struct store_job *pending;    /* submitted, not yet taken by the writer */
	struct store_job **pending_tail;
	struct store_batch *done;     /* committed, not yet collected */
	struct store_batch **done_tail;
	int quit;
	int notify[2];                /* one byte in the pipe while done is not empty */

	/*
	 * --durability full: commits do not sync (synchronous=NORMAL); the
	 * syncer threads fdatasync the WAL after them, several at once, and
	 * a batch is handed back once a sync that began after its commit is
	 * over. Sync n covers every batch committed before it began.
	 */
	int durable_full;
	int wal_fd;
	pthread_t syncers[STORE_SYNCERS];
	int nsyncers;
	pthread_cond_t sync_cv;       /* syncers wait here for unsynced commits */
	struct store_batch *unsynced; /* committed, in commit order, waiting for their sync */
	struct store_batch **unsynced_tail;
	uint64_t committed;           /* commits so far (full durability) */
	uint64_t claimed;             /* commits covered by a sync already begun */
	uint64_t synced;              /* commits covered by a sync that is over */
	int sync_failed;              /* a sync failed: nothing more is acknowledged */
	char *dir;                    /* the database's directory, for its free space */
	char *file;                   /* the database file, as SQLite resolved it (symlinks followed) */
	char *walfile;                /* and its WAL */
	int lock_fd;                  /* holds the flock on the database file; its inode is the one we write */
	struct stat lock_sb;
	struct stat wal_sb;           /* the WAL we opened */
	int lost;                     /* under mu: the file at the path is no longer ours; nothing more is written */
	char lost_error[256];
	int full;                     /* the loop's: the last commit failed, disk full (store_full()) */
	unsigned long long full_free; /* the loop's: bytes free then */
	int sync_quit;                /* the writer is gone: syncers finish and leave */
	char sync_error[200];
};

static void *store_thread(void *arg);
static void *store_syncer(void *arg);
static void *store_reader_thread(void *arg);
static int store_wal_hook(void *arg, sqlite3 *db, const char *name, int frames);
static void store_done(struct store *st, struct store_batch *b);
static void store_release(struct store *st);
static int store_open_wal(struct store *st, char *why);
static unsigned long long store_free_bytes(struct store *st);

/*
 * The database's identity in its header: application_id "lkst" says it is
 * record-countd's, user_version the schema it holds. A database that is not
 * (another program's, or one written by a newer record-countd) is refused
 * before anything is written to it.
 */
#define STORE_APPLICATION_ID 1818981236 /* 0x6c6b7374, "lkst" */
#define STORE_SCHEMA_VERSION 1
#define STORE_STR2(x) #x
#define STORE_STR(x) STORE_STR2(x)

static const char *const store_schema =
    "CREATE TABLE IF NOT EXISTS records ("
    " seq INTEGER PRIMARY KEY,"
    " client TEXT NOT NULL,"
    " value INTEGER NOT NULL,"
    " at REAL NOT NULL,"
    " UNIQUE (client, value))";

/*
 * A record's value as a client's highest, or NULL: a value outside the API's
 * 1..9223372036854775807 (negative, 0, text) can only have been written by
 * other means, and no client's last value is one (max() would take -5 for a
 * client with no other record, and text above any number).
 */
#define STORE_VALUE_OK "CASE WHEN typeof(value) = 'integer' AND value > 0 THEN value END"

/* Run one statement without results on db; 0 or -1. */
static int
store_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Run a prepared statement without results; 0 or -1. */
static int
store_step(sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Prepare sql on db into *stmt; 0 or -1. */
static int
store_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt)
{
	return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL) == SQLITE_OK ? 0 : -1;
}

/*
 * Put db in WAL mode and check that it took: SQLITE_OK, SQLite's error, or
 * -1 when it stays in another journal mode.
 */
static int
store_wal_mode(sqlite3 *db)
{
	sqlite3_stmt *s;
	int rc;

	if ((rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, NULL)) != SQLITE_OK)
		return rc;
	if ((rc = sqlite3_step(s)) == SQLITE_ROW)
		rc = strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0 ? SQLITE_OK : -1;
	else if (rc == SQLITE_DONE)
		rc = -1;
	sqlite3_finalize(s);
	return rc;
}

/* Say in why (256 bytes) why db, in directory dir, cannot be put in WAL mode (rc from store_wal_mode). */
static void
store_wal_error(sqlite3 *db, const char *dir, int rc, char *why)
{
	int ext = sqlite3_extended_errcode(db);

	if (((rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_CANTOPEN) && access(dir, W_OK | X_OK) != 0)
		snprintf(why, 256, "cannot create its WAL files (-wal, -shm): directory %s is not writable (%s)", dir,
		    strerror(errno));
	else if (rc == -1)
		snprintf(why, 256, "cannot use WAL mode; it needs a local filesystem with shared memory");
	else if ((rc & 0xff) == SQLITE_FULL || sqlite3_system_errno(db) == ENOSPC || sqlite3_system_errno(db) == EDQUOT)
		snprintf(why, 256, "cannot create its WAL files (-wal, -shm): %s; free space on that filesystem",
		    strerror(sqlite3_system_errno(db) ? sqlite3_system_errno(db) : ENOSPC));
	else if ((rc & 0xff) == SQLITE_NOTADB)
		snprintf(why, 256, "is not an SQLite database (%s); give a record-countd database or a new file",
		    sqlite3_errmsg(db));
	else if (ext == SQLITE_IOERR_SHMOPEN || ext == SQLITE_IOERR_SHMSIZE || ext == SQLITE_IOERR_SHMMAP ||
	    ext == SQLITE_IOERR_SHMLOCK)
		snprintf(why, 256, "cannot use WAL mode (%s); it needs a local filesystem with shared memory",
		    sqlite3_errmsg(db));
	else
		snprintf(why, 256, "%s", sqlite3_errmsg(db));
}

/* One integer from sql on db into *v; an SQLite result code. */
static int
store_int(sqlite3 *db, const char *sql, int64_t *v)
{
	sqlite3_stmt *q;
	int rc;

	if ((rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL)) != SQLITE_OK)
		return rc;
	if ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		*v = sqlite3_column_int64(q, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE)
		rc = SQLITE_ERROR;
	sqlite3_finalize(q);
	return rc;
}

/*
 * Whether db may be record-countd's, before anything is written to it: ours
 * of a schema we know, a new (empty) file, or one of an older record-countd
 * (no application_id yet, but our records table). *stamp says it needs our
 * identity written. 0, or -1 with the reason in why (256 bytes).
 */
static int
store_identify(sqlite3 *db, const char *dir, int *stamp, char *why)
{
	int64_t app = 0, ver = 0, tables = 0, ours = 0;	/* for clang --analyze: it thinks sqlite3_step may return OK */
	int rc;

	*stamp = 0;
	if ((rc = store_int(db, "PRAGMA application_id", &app)) != SQLITE_OK ||
	    (rc = store_int(db, "PRAGMA user_version", &ver)) != SQLITE_OK ||
	    (rc = store_int(db, "SELECT count(*) FROM sqlite_master", &tables)) != SQLITE_OK ||
	    (rc = store_int(db, "SELECT count(*) = 4 AND group_concat(name, ',') = 'seq,client,value,at'"
	    " FROM (SELECT name FROM pragma_table_info('records') ORDER BY cid)", &ours)) != SQLITE_OK) {
		store_wal_error(db, dir, rc, why);
		return -1;
	}
	if (app == STORE_APPLICATION_ID) {
		if (ver > STORE_SCHEMA_VERSION) {
			snprintf(why, 256, "was written by a newer record-countd (schema version %lld; this one knows"
			    " %d): use that version", (long long)ver, STORE_SCHEMA_VERSION);
			return -1;
		}
		*stamp = ver != STORE_SCHEMA_VERSION;
		return 0;
	}
	if (app != 0) {
		snprintf(why, 256, "is the database of another program (application_id 0x%08llx); give a"
		    " record-countd database or a new file", (unsigned long long)(uint32_t)app);
		return -1;
	}
	if (tables != 0 && !ours) {
		snprintf(why, 256, "holds tables of another program, not record-countd's records; give a"
		    " record-countd database or a new file (nothing was changed)");
		return -1;
	}
	*stamp = 1;
	return 0;
}

/* Open one connection to path; 0, or -1 with the reason in why. */
static int
store_connect(const char *path, sqlite3 **db, char *why)
{
	struct stat sb;
	char *dir, *slash;
	int e, rc;

	if ((rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	    NULL)) != SQLITE_OK) {
		/* SQLite's errno is that of its last try (a read-only open): say what stopped the first. */
		if ((dir = malloc(strlen(path) + 2)) != NULL) {
			strcpy(dir, path);
			if ((slash = strrchr(dir, '/')) == NULL)
				strcpy(dir, ".");
			else
				slash[slash == dir] = '\0';
		}
		if (dir != NULL && stat(path, &sb) != 0 && errno == ENOENT && stat(dir, &sb) == 0 &&
		    S_ISDIR(sb.st_mode) && access(dir, W_OK | X_OK) != 0)
			snprintf(why, 256, "cannot create it: directory %s is not writable (%s)", dir, strerror(errno));
		else if (*db != NULL && (e = sqlite3_system_errno(*db)) != 0)
			snprintf(why, 256, "%s (%s)", sqlite3_errmsg(*db), strerror(e));
		else
			snprintf(why, 256, "%s", *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
		free(dir);
		return -1;
	}
	/* SQLite falls back to read-only when it cannot write the file: every record would fail. */
	if (sqlite3_db_readonly(*db, "main") == 1) {
		if (access(path, W_OK) != 0 && errno == EROFS)
			snprintf(why, 256, "cannot be written: it is on a read-only filesystem (%s)", strerror(EROFS));
		else
			snprintf(why, 256, "cannot be written (check the owner and mode of the file and its directory)");
		return -1;
	}
	sqlite3_busy_timeout(*db, 2000);
	return 0;
}

/*
 * Open the WAL file (for the syncers, and to notice its replacement), and
 * sync its directory once so that the file itself survives a power loss.
 * SQLite keeps the WAL (never removes or replaces it) while a connection is
 * open, and ours stay open.
 */
static int
store_open_wal(struct store *st, char *why)
{
	char *dir, *slash;
	int dfd;

	st->wal_fd = open(st->walfile, O_RDONLY | O_CLOEXEC);
	if (st->wal_fd == -1 || fstat(st->wal_fd, &st->wal_sb) != 0) {
		snprintf(why, 256, "%s: %s", st->walfile, strerror(errno));
		return -1;
	}
	if ((dir = strdup(st->walfile)) == NULL) {
		snprintf(why, 256, "out of memory");
		return -1;
	}
	if ((slash = strrchr(dir, '/')) == NULL)
		strcpy(dir, ".");
	else
		slash[slash == dir] = '\0';
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		fsync(dfd);
		close(dfd);
	}
	free(dir);
	return 0;
}

/* The process holding an flock on the file of sb, from /proc/locks; 0 if unknown (e.g. /proc hidden). */
static long
store_lock_holder(const struct stat *sb)
{
	char line[256];
	unsigned int maj, min;
	unsigned long ino;
	long pid, found = 0;
	FILE *f;

	if ((f = fopen("/proc/locks", "re")) == NULL)
		return 0;
	while (found == 0 && fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "%*d: FLOCK %*s %*s %ld %x:%x:%lu", &pid, &maj, &min, &ino) == 4 &&
		    ino == (unsigned long)sb->st_ino && maj == major(sb->st_dev) && min == minor(sb->st_dev))
			found = pid;
	fclose(f);
	return found;
}

/*
 * Take the database file's lock (see the top of this file): 0, or -1 with
 * the reason in why when another process holds it or the file cannot be
 * opened. Nothing of the file is read or written.
 */
static int
store_lock(struct store *st, char *why)
{
	long pid;

	if ((st->lock_fd = open(st->file, O_RDONLY | O_CLOEXEC)) == -1 || fstat(st->lock_fd, &st->lock_sb) != 0) {
		snprintf(why, 256, "%s: %s", st->file, strerror(errno));
		return -1;
	}
	while (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			snprintf(why, 256, "cannot lock it: %s", strerror(errno));
			return -1;
		}
		if ((pid = store_lock_holder(&st->lock_sb)) != 0)
			snprintf(why, 256, "is in use by another process (pid %ld; a record-countd serving it?): stop that"
			    " one first; two on one database would each count only their own records", pid);
		else
			snprintf(why, 256, "is in use by another process (a record-countd serving it?): stop that one"
			    " first; two on one database would each count only their own records");
		return -1;
	}
	return 0;
}

/* Open rd's read-only connection to path and prepare its statements; 0, or -1 with the reason in why. */
static int
store_reader_open(struct store *st, struct store_reader *rd, const char *path, char *why)
{
	rd->st = st;
	if (store_connect(path, &rd->db, why) != 0)
		return -1;
	if (store_exec(rd->db, "PRAGMA query_only=1") != 0 ||
	    store_prepare(rd->db, "SELECT max(value), count(*) FROM records WHERE client = ?1", &rd->client) != 0 ||
	    store_prepare(rd->db, "SELECT coalesce(max(" STORE_VALUE_OK "), 0) FROM records WHERE client = ?1",
	    &rd->client_fix) != 0 ||
	    store_prepare(rd->db, "SELECT seq, client, value, at FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
	    &rd->records_all) != 0 ||
	    store_prepare(rd->db, "SELECT seq, client, value, at FROM records WHERE client = ?3 AND seq > ?1"
	    " ORDER BY seq LIMIT ?2", &rd->records_one) != 0 ||
	    /* +client: the window is read by seq from the table, never from the (client, value) index. */
	    store_prepare(rd->db, "SELECT seq, client, value, at FROM records WHERE seq > ?1 AND seq <= ?4"
	    " AND +client = ?3 ORDER BY seq LIMIT ?2", &rd->records_window) != 0 ||
	    store_prepare(rd->db, "SELECT count(*) FROM (SELECT 1 FROM records WHERE client = ?1 LIMIT ?2)",
	    &rd->probe) != 0 ||
	    store_prepare(rd->db, "SELECT coalesce(max(seq), 0) FROM records", &rd->top) != 0 ||
	    store_prepare(rd->db, "BEGIN", &rd->begin) != 0 ||
	    store_prepare(rd->db, "COMMIT", &rd->commit) != 0) {
		snprintf(why, 256, "%s", sqlite3_errmsg(rd->db));
		return -1;
	}
	return 0;
}

/* Open the database at path, prepare every statement and start the writer, syncers and readers. */
struct store *
store_open(const char *path, int durable_full, char *why)
{
	struct store *st;
	const char *file;
	char *slash;
	int rc, i, stamp;

	if ((st = calloc(1, sizeof *st)) == NULL) {
		snprintf(why, 256, "out of memory");
		return NULL;
	}
	st->notify[0] = st->notify[1] = st->rnotify[0] = st->rnotify[1] = st->wal_fd = -1;
	st->rpending_tail = &st->rpending;
	st->rdone_tail = &st->rdone;
	st->unsynced_tail = &st->unsynced;
	st->durable_full = durable_full;
	/* No global memory statistics: they take a process-wide mutex on every SQLite allocation. */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	st->pending_tail = &st->pending;
	st->done_tail = &st->done;
	st->lock_fd = -1;
	if (store_connect(path, &st->w, why) != 0)
		goto fail;
	/* Where SQLite put it, symlinks followed: the WAL is next to the file, not to the link. */
	file = sqlite3_db_filename(st->w, "main");
	if (file == NULL || file[0] == '\0' || (st->file = strdup(file)) == NULL ||
	    (st->walfile = strdup(sqlite3_filename_wal(file))) == NULL || (st->dir = strdup(file)) == NULL) {
		snprintf(why, 256, "out of memory");
		goto fail;
	}
	slash = strrchr(st->dir, '/');
	if (slash == NULL)
		strcpy(st->dir, ".");
	else
		slash[slash == st->dir] = '\0';
	if (store_lock(st, why) != 0 || store_identify(st->w, st->dir, &stamp, why) != 0)
		goto fail;
	if ((rc = store_wal_mode(st->w)) != SQLITE_OK) {
		store_wal_error(st->w, st->dir, rc, why);
		goto fail;
	}
	/* A WAL grown past 16 MB (see STORE_WAL_READ_PAUSE_FRAMES) is cut back to that when it starts again. */
	if (store_exec(st->w, "PRAGMA synchronous=NORMAL") != 0 ||
	    store_exec(st->w, "PRAGMA journal_size_limit=16777216") != 0 ||
	    store_exec(st->w, store_schema) != 0 ||
	    (stamp && (store_exec(st->w, "PRAGMA application_id=" STORE_STR(STORE_APPLICATION_ID)) != 0 ||
	    store_exec(st->w, "PRAGMA user_version=" STORE_STR(STORE_SCHEMA_VERSION)) != 0)) ||
	    store_prepare(st->w, "BEGIN IMMEDIATE", &st->begin) != 0 ||
	    store_prepare(st->w, "COMMIT", &st->commit) != 0 ||
	    store_prepare(st->w, "INSERT INTO records (client, value, at) VALUES (?1, ?2, ?3)"
	    " ON CONFLICT (client, value) DO NOTHING", &st->insert) != 0 ||
	    store_prepare(st->w, "SELECT seq FROM records WHERE client = ?1 AND value = ?2", &st->lookup) != 0) {
		snprintf(why, 256, "%s", sqlite3_errmsg(st->w));
		goto fail;
	}
	sqlite3_wal_hook(st->w, store_wal_hook, st);
	for (i = 0; i < STORE_READERS; i++)
		if (store_reader_open(st, &st->readers[i], path, why) != 0)
			goto fail;
	if (store_prepare(st->readers[0].db, "SELECT client, max(value), count(*), min(value) FROM records"
	    " GROUP BY client", &st->clients) != 0 ||
	    store_prepare(st->readers[0].db, "SELECT coalesce(max(" STORE_VALUE_OK "), 0), count(*) - count("
	    STORE_VALUE_OK ") FROM records WHERE client = ?1", &st->client_fix) != 0) {
		snprintf(why, 256, "%s", sqlite3_errmsg(st->readers[0].db));
		goto fail;
	}
	if (store_open_wal(st, why) != 0)
		goto fail;
	if (pipe2(st->notify, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(st->rnotify, O_CLOEXEC | O_NONBLOCK) != 0) {
		snprintf(why, 256, "pipe: %s", strerror(errno));
		goto fail;
	}
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	if (pthread_create(&st->thread, NULL, store_thread, st) != 0) {
		snprintf(why, 256, "cannot start the writer thread");
		pthread_mutex_destroy(&st->mu);
		pthread_cond_destroy(&st->cv);
		goto fail;
	}
	st->threaded = 1;
	pthread_cond_init(&st->sync_cv, NULL);
	for (; durable_full && st->nsyncers < STORE_SYNCERS; st->nsyncers++)
		if (pthread_create(&st->syncers[st->nsyncers], NULL, store_syncer, st) != 0) {
			snprintf(why, 256, "cannot start a syncer thread");
			goto fail;
		}
	pthread_mutex_init(&st->rmu, NULL);
	pthread_cond_init(&st->rcv, NULL);
	st->reading = 1;
	for (; st->nreaders < STORE_READERS; st->nreaders++)
		if (pthread_create(&st->readers[st->nreaders].thread, NULL, store_reader_thread,
		    &st->readers[st->nreaders]) != 0) {
			snprintf(why, 256, "cannot start a reader thread");
			goto fail;
		}
	return st;
fail:
	store_close(st);
	return NULL;
}

/* Let the writer finish every submitted job, then finalise everything and close. */
void
store_close(struct store *st)
{
	struct store_batch *b;
	int i;

	if (st == NULL)
		return;
	if (st->reading) {
		/* Reads still queued are run; those nobody collects are still their owners' to free. */
		pthread_mutex_lock(&st->rmu);
		st->rquit = 1;
		pthread_cond_broadcast(&st->rcv);
		pthread_mutex_unlock(&st->rmu);
		for (i = 0; i < st->nreaders; i++)
			pthread_join(st->readers[i].thread, NULL);
		pthread_mutex_destroy(&st->rmu);
		pthread_cond_destroy(&st->rcv);
	}
	if (st->threaded) {
		pthread_mutex_lock(&st->mu);
		st->quit = 1;
		pthread_cond_broadcast(&st->cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->thread, NULL);
		/* Only now: the writer's last commits need their syncs too. */
		pthread_mutex_lock(&st->mu);
		st->sync_quit = 1;
		pthread_cond_broadcast(&st->sync_cv);
		pthread_mutex_unlock(&st->mu);
		for (i = 0; i < st->nsyncers; i++)
			pthread_join(st->syncers[i], NULL);
		pthread_cond_destroy(&st->sync_cv);
		pthread_mutex_destroy(&st->mu);
		pthread_cond_destroy(&st->cv);
		/* Batches nobody collected: their jobs are still their owners' to free. */
		while ((b = st->done) != NULL) {
			st->done = b->next;
			free(b);
		}
	}
	if (st->notify[0] != -1) {
		close(st->notify[0]);
		close(st->notify[1]);
	}
	if (st->rnotify[0] != -1) {
		close(st->rnotify[0]);
		close(st->rnotify[1]);
	}
	if (st->wal_fd != -1)
		close(st->wal_fd);
	sqlite3_finalize(st->begin);
	sqlite3_finalize(st->commit);
	sqlite3_finalize(st->insert);
	sqlite3_finalize(st->lookup);
	sqlite3_finalize(st->clients);
	sqlite3_finalize(st->client_fix);
	for (i = 0; i < STORE_READERS; i++) {
		sqlite3_finalize(st->readers[i].client);
		sqlite3_finalize(st->readers[i].client_fix);
		sqlite3_finalize(st->readers[i].records_all);
		sqlite3_finalize(st->readers[i].records_one);
		sqlite3_finalize(st->readers[i].records_window);
		sqlite3_finalize(st->readers[i].probe);
		sqlite3_finalize(st->readers[i].top);
		sqlite3_finalize(st->readers[i].begin);
		sqlite3_finalize(st->readers[i].commit);
		sqlite3_close(st->readers[i].db);
	}
	sqlite3_close(st->w);
	/* Last: closing it drops this process's fcntl locks on the file, SQLite's among them. */
	if (st->lock_fd != -1)
		close(st->lock_fd);
	free(st->dir);
	free(st->file);
	free(st->walfile);
	free(st);
}

/* Monotonic seconds. */
static double
store_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Insert one record, or find the original; 0 or -1. */
static int
store_insert(struct store *st, const struct store_job *j, size_t i)
{
	int rc;

	sqlite3_bind_text(st->insert, 1, j->client, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st->insert, 2, (sqlite3_int64)j->values[i]);
	sqlite3_bind_double(st->insert, 3, j->at);
	rc = sqlite3_step(st->insert);
	sqlite3_reset(st->insert);
	if (rc != SQLITE_DONE)
		return -1;
	if (sqlite3_changes(st->w) == 1) {
		j->seqs[i] = sqlite3_last_insert_rowid(st->w);
		j->dups[i] = 0;
		return 0;
	}
	sqlite3_bind_text(st->lookup, 1, j->client, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st->lookup, 2, (sqlite3_int64)j->values[i]);
	rc = sqlite3_step(st->lookup);
	if (rc == SQLITE_ROW)
		j->seqs[i] = sqlite3_column_int64(st->lookup, 0);
	sqlite3_reset(st->lookup);
	j->dups[i] = 1;
	return rc == SQLITE_ROW ? 0 : -1;
}

/* Write jobs in one transaction and commit it, or roll it all back; the outcome goes in b. */
static void
store_write(struct store *st, struct store_batch *b)
{
	struct store_job *j;
	size_t i, added = 0;
	int ok;

	/* Counted before BEGIN, so a batch that fails at once still says how many records failed. */
	for (j = b->jobs; j != NULL; j = j->next)
		b->records += j->n;
	b->began = store_now();
	ok = store_step(st->begin) == 0;
	for (j = b->jobs; ok && j != NULL; j = j->next)
		for (i = 0; ok && i < j->n; i++)
			if ((ok = store_insert(st, j, i) == 0) && !j->dups[i])
				added++;
	if (ok)
		ok = store_step(st->commit) == 0;
	if (!ok) {
		snprintf(b->error, sizeof b->error, "%s", sqlite3_errmsg(st->w));
		b->full = (sqlite3_errcode(st->w) & 0xff) == SQLITE_FULL;
		if (sqlite3_get_autocommit(st->w) == 0)
			store_exec(st->w, "ROLLBACK");
	}
	b->ok = ok;
	b->added = ok ? added : 0;
}

/* Fail a batch without writing it: the database file is no longer at its path (see store_check()). */
static void
store_refuse(struct store *st, struct store_batch *b)
{
	struct store_job *j;

	for (j = b->jobs; j != NULL; j = j->next)
		b->records += j->n;
	b->began = store_now();
	b->ok = 0;
	pthread_mutex_lock(&st->mu);
	snprintf(b->error, sizeof b->error, "%s", st->lost_error);
	pthread_mutex_unlock(&st->mu);
}

/* The writer thread: take everything submitted, write and commit it as one batch, hand it back; again. */
static void *
store_thread(void *arg)
{
	struct store *st = arg;
	struct store_batch *b = NULL;
	int wake, lost;

	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (st->pending == NULL && !st->quit)
			pthread_cond_wait(&st->cv, &st->mu);
		if (st->pending == NULL)
			break;          /* quitting, and every job is written */
		pthread_mutex_unlock(&st->mu);
		/* Allocated before the jobs are taken, so a failure leaves them queued. */
		while ((b = calloc(1, sizeof *b)) == NULL)
			usleep(10000);
		pthread_mutex_lock(&st->mu);
		b->jobs = st->pending;
		st->pending = NULL;
		st->pending_tail = &st->pending;
		lost = st->lost;
		pthread_mutex_unlock(&st->mu);

		if (lost)
			store_refuse(st, b);
		else
			store_write(st, b);

		pthread_mutex_lock(&st->mu);
		if (st->durable_full) {
			if (b->ok && st->sync_failed) {
				/* Committed, but after a failed sync nothing can be promised. */
				b->ok = 0;
				snprintf(b->error, sizeof b->error, "%s", st->sync_error);
			}
			if ((wake = b->ok))
				b->synced_by = ++st->committed;
			*st->unsynced_tail = b;
			st->unsynced_tail = &b->next;
			store_release(st);      /* b may be the loop's from here on */
			if (wake) {
				/* Signalled unlocked, so the syncer does not wake only to wait for mu. */
				pthread_mutex_unlock(&st->mu);
				pthread_cond_signal(&st->sync_cv);
				pthread_mutex_lock(&st->mu);
			}
		} else
			store_done(st, b);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* Hand b back to the loop (under mu). */
static void
store_done(struct store *st, struct store_batch *b)
{
	b->seconds = store_now() - b->began;
	b->next = NULL;
	if (st->done == NULL)
		while (write(st->notify[1], "c", 1) == -1 && errno == EINTR)
			;
	*st->done_tail = b;
	st->done_tail = &b->next;
}

/* Hand back, in commit order, every batch at the head whose sync is over (under mu). */
static void
store_release(struct store *st)
{
	struct store_batch *b;

	while ((b = st->unsynced) != NULL && (b->synced_by <= st->synced || !b->ok)) {
		if ((st->unsynced = b->next) == NULL)
			st->unsynced_tail = &st->unsynced;
		store_done(st, b);
	}
}

/*
 * A syncer thread: while commits are not covered by a sync, begin one. The
 * WAL's frames reach the disk with it, so every batch committed before it
 * began is durable once it returns; a commit's frames that a checkpoint has
 * since copied into the database file were synced by that checkpoint.
 */
static void *
store_syncer(void *arg)
{
	struct store *st = arg;
	struct store_batch *b;
	uint64_t covers;
	int rc, e;

	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (st->claimed == st->committed && !st->sync_quit)
			pthread_cond_wait(&st->sync_cv, &st->mu);
		if (st->claimed == st->committed)
			break;
		covers = st->claimed = st->committed;
		pthread_mutex_unlock(&st->mu);
		while ((rc = fdatasync(st->wal_fd)) == -1 && errno == EINTR)
			;
		e = errno;
		pthread_mutex_lock(&st->mu);
		if (rc == 0) {
			if (covers > st->synced)
				st->synced = covers;
		} else if (!st->sync_failed) {
			/* After a failed fsync the kernel may have dropped the pages: never acknowledge again. */
			st->sync_failed = 1;
			snprintf(st->sync_error, sizeof st->sync_error,
			    "fdatasync of the WAL failed (%s); restart record-countd", strerror(e));
			/* Every commit not yet handed back, not only this sync's: the WAL may now have a hole. */
			for (b = st->unsynced; b != NULL; b = b->next)
				if (b->ok) {
					b->ok = 0;
					snprintf(b->error, sizeof b->error, "%s", st->sync_error);
				}
		}
		store_release(st);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* Queue a list of jobs behind every job submitted before them. */
void
store_submit(struct store *st, struct store_job *jobs)
{
	struct store_job *last;
	int wake;

	if (jobs == NULL)
		return;
	for (last = jobs; last->next != NULL; last = last->next)
		;
	pthread_mutex_lock(&st->mu);
	wake = st->pending == NULL;
	*st->pending_tail = jobs;
	st->pending_tail = &last->next;
	pthread_mutex_unlock(&st->mu);
	if (wake)
		pthread_cond_signal(&st->cv);
}

/* The fd the writer makes readable when a batch is committed. */
int
store_notify_fd(struct store *st)
{
	return st->notify[0];
}

/* Take every committed batch. */
struct store_batch *
store_collect(struct store *st)
{
	struct store_batch *b, *nb;
	char c;

	pthread_mutex_lock(&st->mu);
	if ((b = st->done) != NULL) {
		st->done = NULL;
		st->done_tail = &st->done;
		while (read(st->notify[0], &c, 1) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&st->mu);
	for (nb = b; nb != NULL; nb = nb->next)
		if (nb->ok)
			st->full = 0;
		else if (nb->full) {
			st->full = 1;
			st->full_free = store_free_bytes(st);
		}
	return b;
}

/* Free a collected batch (not its jobs). */
void
store_batch_free(struct store_batch *b)
{
	free(b);
}

/*
 * Step q, a page query (?1 after, ?2 limit, ?3 the client if not NULL, ?4
 * end if q has it), passing each record to rd's callback; SQLite's last
 * result.
 */
static int
store_page(sqlite3_stmt *q, struct store_read *rd, int64_t after, unsigned limit, const char *client, int64_t end)
{
	const char *text;
	int rc;

	sqlite3_bind_int64(q, 1, after);
	sqlite3_bind_int64(q, 2, limit);
	if (client != NULL)
		sqlite3_bind_text(q, 3, client, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(q) >= 4)
		sqlite3_bind_int64(q, 4, end);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		/* A NULL id is out of memory unless the column holds NULL (written by other means). */
		if ((text = (const char *)sqlite3_column_text(q, 1)) == NULL && sqlite3_column_type(q, 1) != SQLITE_NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		rd->last_seq = sqlite3_column_int64(q, 0);
		rd->rows++;
		rd->cb(rd->last_seq, text, sqlite3_column_int64(q, 2), sqlite3_column_double(q, 3), rd->arg);
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

/* One integer from q, with ?1 and ?2 bound to text a (if not NULL) and b, into *v; SQLite's last result. */
static int
store_probe(sqlite3_stmt *q, const char *a, int64_t b, int64_t *v)
{
	int rc;

	if (a != NULL) {
		sqlite3_bind_text(q, 1, a, -1, SQLITE_STATIC);
		sqlite3_bind_int64(q, 2, b);
	}
	if ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		*v = sqlite3_column_int64(q, 0);
		rc = SQLITE_DONE;
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return rc;
}

/*
 * A page of one client's records (see STORE_WINDOW_ROWS), all of it from
 * one snapshot: a window read at one moment and the index at another could
 * miss records committed between the two. SQLite's last result.
 */
static int
store_page_client(struct store_reader *reader, struct store_read *rd)
{
	int64_t window = (int64_t)rd->limit * STORE_WINDOW_ROWS, n = 0, top = 0, end;
	int rc;

	if (store_step(reader->begin) != 0)
		return sqlite3_errcode(reader->db);
	if ((rc = store_probe(reader->probe, rd->client, window, &n)) != SQLITE_DONE)
		goto done;
	if (n < window) {
		/* A small client: its index range is cheaper than the window. */
		rc = store_page(reader->records_one, rd, rd->after, rd->limit, rd->client, 0);
		goto done;
	}
	end = rd->after > INT64_MAX - window ? INT64_MAX : rd->after + window;
	rc = store_page(reader->records_window, rd, rd->after, rd->limit, rd->client, end);
	if (rc != SQLITE_DONE || rd->rows == rd->limit)
		goto done;
	if ((rc = store_probe(reader->top, NULL, 0, &top)) != SQLITE_DONE || top <= end)
		goto done;
	rc = store_page(reader->records_one, rd, end, rd->limit - (unsigned)rd->rows, rd->client, 0);
done:
	/* Said before COMMIT, which would replace SQLite's message. */
	if (rc != SQLITE_DONE)
		snprintf(rd->error, sizeof rd->error, "%s", sqlite3_errmsg(reader->db));
	if (store_step(reader->commit) != 0 && rc == SQLITE_DONE) {
		rc = sqlite3_errcode(reader->db);
		snprintf(rd->error, sizeof rd->error, "%s", sqlite3_errmsg(reader->db));
	}
	return rc;
}

/* Run one read on reader's connection, filling in its answer. */
static void
store_run_read(struct store_reader *reader, struct store_read *rd)
{
	sqlite3_stmt *q;
	int rc, inrange;

	rd->error[0] = '\0';
	if (rd->limit == 0) {
		q = reader->client;
		sqlite3_bind_text(q, 1, rd->client, -1, SQLITE_STATIC);
		if ((rc = sqlite3_step(q)) == SQLITE_ROW) {
			/*
			 * max() is the answer when in range (text sorts above
			 * any number); else the range check in SQL, which costs
			 * half as much again, finds it. Types first: reading a
			 * value as another type converts it.
			 */
			inrange = sqlite3_column_type(q, 0) == SQLITE_INTEGER && sqlite3_column_int64(q, 0) > 0;
			rd->last_value = (uint64_t)sqlite3_column_int64(q, 0);
			rd->recorded = (uint64_t)sqlite3_column_int64(q, 1);
			rc = SQLITE_DONE;
			if (!inrange && rd->recorded > 0) {
				sqlite3_bind_text(reader->client_fix, 1, rd->client, -1, SQLITE_STATIC);
				if ((rc = sqlite3_step(reader->client_fix)) == SQLITE_ROW) {
					rd->last_value = (uint64_t)sqlite3_column_int64(reader->client_fix, 0);
					rc = SQLITE_DONE;
				}
				sqlite3_reset(reader->client_fix);
				sqlite3_clear_bindings(reader->client_fix);
			} else if (!inrange)
				rd->last_value = 0;
		}
		if (rc != SQLITE_DONE)
			snprintf(rd->error, sizeof rd->error, "%s", sqlite3_errmsg(reader->db));
		sqlite3_reset(q);
		sqlite3_clear_bindings(q);
	} else if (rd->client != NULL)
		rc = store_page_client(reader, rd);
	else
		rc = store_page(reader->records_all, rd, rd->after, rd->limit, NULL, 0);
	if (!(rd->ok = rc == SQLITE_DONE) && rd->error[0] == '\0')
		snprintf(rd->error, sizeof rd->error, "%s", sqlite3_errmsg(reader->db));
}

/* After each commit (writer thread): checkpoint as SQLite would, and publish the WAL's size for the readers. */
static int
store_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct store *st = arg;

	if (frames >= STORE_WAL_CHECKPOINT_FRAMES)
		sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	__atomic_store_n(&st->wal_frames, frames, __ATOMIC_RELAXED);
	__atomic_add_fetch(&st->wal_commits, 1, __ATOMIC_RELAXED);
	return SQLITE_OK;
}

/* Before a read: while the WAL is past its bound and commits go on, let a checkpoint with no reader restart it. */
static void
store_read_pause(struct store *st)
{
	unsigned seen = 0;
	int i;

	for (i = 0; i < STORE_WAL_READ_PAUSE_MS; i++) {
		if (__atomic_load_n(&st->wal_frames, __ATOMIC_RELAXED) <= STORE_WAL_READ_PAUSE_FRAMES)
			return;
		if (i % STORE_WAL_IDLE_MS == 0) {
			if (i > 0 && __atomic_load_n(&st->wal_commits, __ATOMIC_RELAXED) == seen)
				return;
			seen = __atomic_load_n(&st->wal_commits, __ATOMIC_RELAXED);
		}
		usleep(1000);
	}
}

/* A reader thread: take the oldest submitted read, run it and hand it back; again. */
static void *
store_reader_thread(void *arg)
{
	struct store_reader *reader = arg;
	struct store *st = reader->st;
	struct store_read *rd;

	pthread_mutex_lock(&st->rmu);
	for (;;) {
		while (st->rpending == NULL && !st->rquit)
			pthread_cond_wait(&st->rcv, &st->rmu);
		if ((rd = st->rpending) == NULL)
			break;          /* quitting, and every read is run */
		if ((st->rpending = rd->next) == NULL)
			st->rpending_tail = &st->rpending;
		pthread_mutex_unlock(&st->rmu);

		store_read_pause(st);
		store_run_read(reader, rd);

		pthread_mutex_lock(&st->rmu);
		rd->next = NULL;
		if (st->rdone == NULL)
			while (write(st->rnotify[1], "r", 1) == -1 && errno == EINTR)
				;
		*st->rdone_tail = rd;
		st->rdone_tail = &rd->next;
	}
	pthread_mutex_unlock(&st->rmu);
	return NULL;
}

/* Queue a read and wake a reader for it (each read its own: two queued at once go to two readers). */
void
store_read(struct store *st, struct store_read *rd)
{
	rd->next = NULL;
	pthread_mutex_lock(&st->rmu);
	*st->rpending_tail = rd;
	st->rpending_tail = &rd->next;
	pthread_mutex_unlock(&st->rmu);
	pthread_cond_signal(&st->rcv);
}

/* The fd the readers make readable when a read is done. */
int
store_read_fd(struct store *st)
{
	return st->rnotify[0];
}

/* Take every finished read. */
struct store_read *
store_read_collect(struct store *st)
{
	struct store_read *rd;
	char c;

	pthread_mutex_lock(&st->rmu);
	if ((rd = st->rdone) != NULL) {
		st->rdone = NULL;
		st->rdone_tail = &st->rdone;
		while (read(st->rnotify[0], &c, 1) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&st->rmu);
	return rd;
}

/* The start-up scan's progress handler: tell the caller it goes on; never interrupts. */
static int
store_clients_tick(void *arg)
{
	struct store_tick *t = arg;

	t->cb(t->arg);
	return 0;
}

/* Every client with its summary (on the first reader's connection, before the readers have any work). */
int
store_clients(struct store *st, store_client_cb cb, store_progress_cb progress, void *arg, char *why)
{
	sqlite3_stmt *q = st->clients, *fix = st->client_fix;
	sqlite3 *db = st->readers[0].db;
	struct store_tick tick = { progress, arg };
	const char *client;
	uint64_t last, bad;
	int rc, inrange;

	if (progress != NULL)
		sqlite3_progress_handler(db, STORE_TICK_STEPS, store_clients_tick, &tick);
	/*
	 * The scan reads the (client, value) index in key order, whose pages
	 * lie all over the file once clients interleave: read with pread(2)
	 * one page at a time, a cold start took three times as long (5.7 s
	 * against 1.8 s for 10 million records of 100,000 clients) as through
	 * a map, where the kernel reads around each page it faults in. Only
	 * for this scan: a map turns an I/O error into SIGBUS.
	 */
	store_exec(db, "PRAGMA mmap_size=" STORE_STR(STORE_SCAN_MMAP));

	/*
	 * Plain max() and min() cost a fifth more than max() alone over a
	 * million clients, the range check in SQL almost half: so the check runs
	 * only for a client whose highest or lowest value is not in range.
	 */
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		/* Types first: reading a value as another type converts it. */
		inrange = sqlite3_column_type(q, 1) == SQLITE_INTEGER && sqlite3_column_type(q, 3) == SQLITE_INTEGER &&
		    sqlite3_column_int64(q, 1) > 0 && sqlite3_column_int64(q, 3) > 0;
		/* NULL: out of memory, or a NULL id written by other means. */
		if ((client = (const char *)sqlite3_column_text(q, 0)) == NULL &&
		    sqlite3_column_type(q, 0) != SQLITE_NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		if (client == NULL)
			client = "";
		last = (uint64_t)sqlite3_column_int64(q, 1);
		bad = 0;
		if (!inrange) {
			sqlite3_bind_value(fix, 1, sqlite3_column_value(q, 0));
			if (sqlite3_step(fix) != SQLITE_ROW) {
				snprintf(why, 256, "%s", sqlite3_errmsg(db));
				sqlite3_reset(fix);
				break;
			}
			last = (uint64_t)sqlite3_column_int64(fix, 0);
			bad = (uint64_t)sqlite3_column_int64(fix, 1);
			sqlite3_reset(fix);
			sqlite3_clear_bindings(fix);
		}
		cb(client, last, (uint64_t)sqlite3_column_int64(q, 2), bad, arg);
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		snprintf(why, 256, "%s", rc == SQLITE_NOMEM ? sqlite3_errstr(rc) : sqlite3_errmsg(db));
	sqlite3_reset(q);
	store_exec(db, "PRAGMA mmap_size=0");
	sqlite3_progress_handler(db, 0, NULL, NULL);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Bytes free for us on the database's filesystem; 0 if unknown. */
static unsigned long long
store_free_bytes(struct store *st)
{
	struct statvfs sv;

	if (st->dir == NULL || statvfs(st->dir, &sv) != 0)
		return 0;
	return (unsigned long long)sv.f_bavail * sv.f_frsize;
}

/* Is the disk full (and why)? */
int
store_full(struct store *st, char *why, size_t len)
{
	unsigned long long now;

	if (!st->full)
		return 0;
	if ((now = store_free_bytes(st)) > st->full_free)
		return 0;
	snprintf(why, len, "the disk holding the database is full (%llu bytes free in %s): the last commit failed "
	    "and was rolled back; records are refused until space is freed", now, st->dir);
	return 1;
}

/* Has a sync failed, or the database file gone from its path (and why)? */
int
store_failed(struct store *st, char *why, size_t len)
{
	int failed;

	pthread_mutex_lock(&st->mu);
	if ((failed = st->sync_failed))
		snprintf(why, len, "%s", st->sync_error);
	else if ((failed = st->lost))
		snprintf(why, len, "%s", st->lost_error);
	pthread_mutex_unlock(&st->mu);
	return failed;
}

/*
 * Is the file at path still the one open as sb? 0 if so (or if stat fails
 * otherwise than with ENOENT: nothing is known), else -1 with what
 * happened in why (256 bytes).
 */
static int
store_same(const char *path, const struct stat *sb, const char *what, char *why)
{
	struct stat now;
	const char *how;

	if (stat(path, &now) == 0) {
		if (now.st_dev == sb->st_dev && now.st_ino == sb->st_ino)
			return 0;
		how = "replaced by another file";
	} else if (errno == ENOENT)
		how = "removed";
	else
		return 0;
	snprintf(why, 256, "%s %s was %s while record-countd ran: records would go to a file no longer there, so "
	    "none is taken; restart record-countd", what, path, how);
	return -1;
}

/* Are the database and its WAL still the files at their paths? Once not, nothing more is written. */
int
store_check(struct store *st, char *why, size_t len)
{
	char what[sizeof st->lost_error];

	/* Only the loop sets lost: read here without mu. */
	if (st->lost)
		return 0;
	if (store_same(st->file, &st->lock_sb, "the database", what) == 0 &&
	    store_same(st->walfile, &st->wal_sb, "the database's WAL", what) == 0)
		return 0;
	pthread_mutex_lock(&st->mu);
	st->lost = 1;
	memcpy(st->lost_error, what, sizeof st->lost_error);
	pthread_mutex_unlock(&st->mu);
	snprintf(why, len, "%s", what);
	return -1;
}
