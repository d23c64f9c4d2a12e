/*
 * store-sqlite.c: records in one SQLite file, WAL mode, group commit.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

struct store {
	sqlite3 *db;
	sqlite3_stmt *insert;
	sqlite3_stmt *lookup;
	sqlite3_stmt *client;
	sqlite3_stmt *clients;
	sqlite3_stmt *records_all;
	sqlite3_stmt *records_one;
	sqlite3_stmt *begin;          /* prepared once: a batch is opened and committed per loop pass */
	sqlite3_stmt *commit;
	int in_batch;
	int doomed;

	/* The writer thread: commits a batch while the loop goes on. */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int threaded;
	int busy;                     /* loop side: a commit was started */
	int job;                      /* under mu: a commit is requested */
	int done;                     /* under mu: it is over */
	int result;
	int quit;
	int notify[2];
};

static void *store_thread(void *arg);

static const char *const store_schema =
    "CREATE TABLE IF NOT EXISTS records ("
    " seq INTEGER PRIMARY KEY,"
    " client TEXT NOT NULL,"
    " value INTEGER NOT NULL,"
    " at REAL NOT NULL,"
    " UNIQUE (client, value))";

/* Run one statement without results; 0 or -1. */
static int
store_exec(struct store *st, const char *sql)
{
	return sqlite3_exec(st->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Run a prepared statement without results; 0 or -1. */
static int
store_step(sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Prepare sql into *stmt; 0 or -1. */
static int
store_prepare(struct store *st, const char *sql, sqlite3_stmt **stmt)
{
	return sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL) == SQLITE_OK ? 0 : -1;
}

/* Open the database at path and prepare every statement. */
struct store *
store_open(const char *path, int durable_full, char *why)
{
	struct store *st;

	if ((st = calloc(1, sizeof *st)) == NULL) {
		snprintf(why, 256, "out of memory");
		return NULL;
	}
	st->notify[0] = st->notify[1] = -1;
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	    NULL) != SQLITE_OK) {
		snprintf(why, 256, "%s", st->db ? sqlite3_errmsg(st->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 2000);
	if (store_exec(st, "PRAGMA journal_mode=WAL") != 0 ||
	    store_exec(st, durable_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL") != 0 ||
	    store_exec(st, store_schema) != 0 ||
	    store_prepare(st, "INSERT INTO records (client, value, at) VALUES (?1, ?2, ?3)"
	    " ON CONFLICT (client, value) DO NOTHING", &st->insert) != 0 ||
	    store_prepare(st, "SELECT seq FROM records WHERE client = ?1 AND value = ?2", &st->lookup) != 0 ||
	    store_prepare(st, "SELECT coalesce(max(value), 0), count(*) FROM records WHERE client = ?1",
	    &st->client) != 0 ||
	    store_prepare(st, "SELECT client, max(value), count(*) FROM records GROUP BY client", &st->clients) != 0 ||
	    store_prepare(st, "SELECT seq, client, value, at FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
	    &st->records_all) != 0 ||
	    store_prepare(st, "SELECT seq, client, value, at FROM records WHERE client = ?3 AND seq > ?1"
	    " ORDER BY seq LIMIT ?2", &st->records_one) != 0 ||
	    store_prepare(st, "BEGIN IMMEDIATE", &st->begin) != 0 ||
	    store_prepare(st, "COMMIT", &st->commit) != 0) {
		snprintf(why, 256, "%s", sqlite3_errmsg(st->db));
		goto fail;
	}
	if (pipe2(st->notify, O_CLOEXEC) != 0) {
		snprintf(why, 256, "pipe: %s", strerror(errno));
		goto fail;
	}
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	if (pthread_create(&st->thread, NULL, store_thread, st) != 0) {
		snprintf(why, 256, "cannot start the writer thread");
		goto fail;
	}
	st->threaded = 1;
	return st;
fail:
	store_close(st);
	return NULL;
}

/* Finalise everything and close. */
void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->busy)
		store_commit_finish(st);
	if (st->threaded) {
		pthread_mutex_lock(&st->mu);
		st->quit = 1;
		pthread_cond_broadcast(&st->cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->thread, NULL);
		pthread_mutex_destroy(&st->mu);
		pthread_cond_destroy(&st->cv);
	}
	if (st->notify[0] != -1) {
		close(st->notify[0]);
		close(st->notify[1]);
	}
	if (st->in_batch)
		store_commit(st);
	sqlite3_finalize(st->insert);
	sqlite3_finalize(st->lookup);
	sqlite3_finalize(st->client);
	sqlite3_finalize(st->clients);
	sqlite3_finalize(st->records_all);
	sqlite3_finalize(st->records_one);
	sqlite3_finalize(st->begin);
	sqlite3_finalize(st->commit);
	sqlite3_close(st->db);
	free(st);
}

/* Insert one record in the open batch, or find the original. */
int
store_record(struct store *st, const char *client, uint64_t value, int64_t *seq, int *dup)
{
	struct timeval tv;
	int rc;

	if (st->doomed)
		return -1;
	if (!st->in_batch) {
		if (store_step(st->begin) != 0)
			return -1;
		st->in_batch = 1;
	}
	gettimeofday(&tv, NULL);
	sqlite3_bind_text(st->insert, 1, client, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st->insert, 2, (sqlite3_int64)value);
	sqlite3_bind_double(st->insert, 3, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
	rc = sqlite3_step(st->insert);
	sqlite3_reset(st->insert);
	if (rc != SQLITE_DONE) {
		st->doomed = 1;
		return -1;
	}
	if (sqlite3_changes(st->db) == 1) {
		*seq = sqlite3_last_insert_rowid(st->db);
		*dup = 0;
		return 0;
	}
	sqlite3_bind_text(st->lookup, 1, client, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st->lookup, 2, (sqlite3_int64)value);
	rc = sqlite3_step(st->lookup);
	if (rc == SQLITE_ROW)
		*seq = sqlite3_column_int64(st->lookup, 0);
	sqlite3_reset(st->lookup);
	if (rc != SQLITE_ROW) {
		st->doomed = 1;
		return -1;
	}
	*dup = 1;
	return 0;
}

/* Is a batch open (and not being committed)? */
int
store_in_batch(struct store *st)
{
	return !st->busy && st->in_batch;
}

/* The writer thread: run each requested commit, then say so on the pipe. */
static void *
store_thread(void *arg)
{
	struct store *st = arg;
	int rc;

	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (!st->job && !st->quit)
			pthread_cond_wait(&st->cv, &st->mu);
		if (st->quit)
			break;
		pthread_mutex_unlock(&st->mu);
		rc = store_commit(st);
		pthread_mutex_lock(&st->mu);
		st->job = 0;
		st->result = rc;
		st->done = 1;
		/* Written before done is visible to the loop, so finish always finds the byte. */
		while (write(st->notify[1], "c", 1) == -1 && errno == EINTR)
			;
		pthread_cond_broadcast(&st->cv);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* Hand the open batch to the writer thread. */
int
store_commit_start(struct store *st)
{
	if (st->busy || !st->in_batch)
		return -1;
	st->busy = 1;
	pthread_mutex_lock(&st->mu);
	st->done = 0;
	st->job = 1;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
	return 0;
}

/* Is a started commit still running (or not yet collected)? */
int
store_commit_busy(struct store *st)
{
	return st->busy;
}

/* The fd the writer thread writes to when a commit is over. */
int
store_notify_fd(struct store *st)
{
	return st->notify[0];
}

/* Wait for the started commit and collect its result. */
int
store_commit_finish(struct store *st)
{
	char c;
	int rc;

	if (!st->busy)
		return 0;
	pthread_mutex_lock(&st->mu);
	while (!st->done)
		pthread_cond_wait(&st->cv, &st->mu);
	st->done = 0;
	rc = st->result;
	pthread_mutex_unlock(&st->mu);
	while (read(st->notify[0], &c, 1) == -1 && errno == EINTR)
		;
	st->busy = 0;
	return rc;
}

/* Commit the open batch, or roll it back if it is doomed or the commit fails. */
int
store_commit(struct store *st)
{
	int ok;

	if (!st->in_batch) {
		st->doomed = 0;
		return 0;
	}
	ok = !st->doomed && store_step(st->commit) == 0;
	if (!ok && sqlite3_get_autocommit(st->db) == 0)
		store_exec(st, "ROLLBACK");
	st->in_batch = 0;
	st->doomed = 0;
	return ok ? 0 : -1;
}

/* Summary of one client from committed (and open-batch) data. */
int
store_client(struct store *st, const char *client, uint64_t *last_value, uint64_t *recorded)
{
	int rc;

	sqlite3_bind_text(st->client, 1, client, -1, SQLITE_STATIC);
	rc = sqlite3_step(st->client);
	if (rc == SQLITE_ROW) {
		*last_value = (uint64_t)sqlite3_column_int64(st->client, 0);
		*recorded = (uint64_t)sqlite3_column_int64(st->client, 1);
	}
	sqlite3_reset(st->client);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* Every client with its summary. */
int
store_clients(struct store *st, store_client_cb cb, void *arg)
{
	int rc;

	while ((rc = sqlite3_step(st->clients)) == SQLITE_ROW)
		cb((const char *)sqlite3_column_text(st->clients, 0),
		    (uint64_t)sqlite3_column_int64(st->clients, 1),
		    (uint64_t)sqlite3_column_int64(st->clients, 2), arg);
	sqlite3_reset(st->clients);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* A page of records in seq order. */
int
store_records(struct store *st, const char *client, int64_t after, unsigned limit, store_record_cb cb, void *arg)
{
	sqlite3_stmt *s = client ? st->records_one : st->records_all;
	int rc;

	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int64(s, 2, limit);
	if (client)
		sqlite3_bind_text(s, 3, client, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		cb(sqlite3_column_int64(s, 0), (const char *)sqlite3_column_text(s, 1),
		    (uint64_t)sqlite3_column_int64(s, 2), sqlite3_column_double(s, 3), arg);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The last SQLite error message. */
const char *
store_error(struct store *st)
{
	return sqlite3_errmsg(st->db);
}
