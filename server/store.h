/*
 * store.h: where records live. The daemon sees only these functions; SQLite
 * (store-sqlite.c) implements them now, a PostgreSQL store-pg.c would
 * implement the same set and be chosen at build time.
 *
 * Writes are jobs. The caller submits them from its loop, in arrival order;
 * the store's writer thread writes every job submitted since its last commit
 * as one batch and commits it (group commit), then hands the batch back. A
 * job is acknowledged only once it is collected from a committed batch.
 *
 * Reads are jobs too, taken in order by a few reader threads that run them
 * at once, so a slow one (a client with millions of records) holds up no
 * other request, and no other read unless every reader is busy; they see
 * committed records only.
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/*
 * One client's values to record, in order. The caller allocates the job and
 * fills client, values and n, with seqs and dups pointing at n entries each;
 * the store owns the job from store_submit() until store_collect() returns
 * it, and fills seqs (a record's sequence number, the original one if it
 * existed) and dups (1 for such a duplicate).
 */
struct store_job {
	const char *client;
	const uint64_t *values;
	int64_t *seqs;
	unsigned char *dups;
	size_t n;
	double at;                    /* wall-clock arrival, seconds; stored with each record */
	struct store_job *next;       /* the store's while it owns the job */
};

/* Jobs written and committed (or rolled back) together; see store_collect(). */
struct store_batch {
	struct store_job *jobs;       /* in submission order, linked by next */
	size_t records;               /* values in its jobs, duplicates included, whether or not it is ok */
	size_t added;                 /* of them, records newly stored (not duplicates); only if ok */
	double seconds;               /* from BEGIN until durable (the end of its sync, or of COMMIT) */
	int ok;                       /* 0: rolled back, nothing of it is stored */
	int full;                     /* not ok because the disk is full (SQLITE_FULL) */
	char error[256];              /* why, when not ok */
	uint64_t synced_by;           /* the store's: the commit number a sync must cover */
	double began;                 /* the store's: when BEGIN ran (monotonic seconds) */
	struct store_batch *next;
};

/*
 * Open (creating if needed) the database at path and start its threads.
 * durable_full: an acknowledged record survives power loss (its batch is
 * handed back only after the WAL is fdatasync'd); otherwise it survives a
 * crash of the process. The store is this process's alone until
 * store_close(): one another process holds is refused (the daemons keep
 * per-client summaries in memory, which a second writer would leave stale).
 * Returns NULL with a reason in why (256 bytes).
 */
struct store *store_open(const char *path, int durable_full, char *why);
/* Run every submitted read and write and commit every submitted job, stop the threads, close; the store is freed. */
void store_close(struct store *st);

/*
 * Queue jobs (a list linked by next) for the writer thread, in order, behind
 * every job submitted before them. Submitting the jobs of a whole loop pass
 * at once keeps them in one batch.
 */
void store_submit(struct store *st, struct store_job *jobs);
/* An fd that is readable while committed batches wait to be collected. */
int store_notify_fd(struct store *st);
/*
 * Take the committed batches, oldest first (linked by next), or NULL. Their
 * jobs are the caller's again; each batch is freed with store_batch_free().
 */
struct store_batch *store_collect(struct store *st);
void store_batch_free(struct store_batch *b);

/*
 * One record of a page. value is as stored: outside 1..9223372036854775807
 * only if written by other means (text reads as 0).
 */
typedef void (*store_record_cb)(int64_t seq, const char *client, int64_t value, double at, void *arg);

/*
 * One read. The caller allocates it and fills the query; the store owns it
 * from store_read() until store_read_collect() returns it with the answer.
 * With limit 0 it is a client's summary (highest value, 0 if none is in
 * 1..9223372036854775807, and number of records); otherwise a page: the records with seq > after in seq order, at
 * most limit, of one client or of all (client NULL), each passed to cb on
 * a reader thread.
 */
struct store_read {
	const char *client;           /* the caller's, valid until collected */
	int64_t after;
	unsigned limit;
	store_record_cb cb;
	void *arg;
	uint64_t last_value;          /* the summary */
	uint64_t recorded;
	size_t rows;                  /* the page: records passed to cb */
	int64_t last_seq;             /* and the seq of the last one */
	int ok;                       /* 0: the read failed, see error */
	char error[256];
	struct store_read *next;      /* the store's while it owns the read */
};

/* Queue a read: the next reader free takes it, once every read submitted before it is taken. */
void store_read(struct store *st, struct store_read *rd);
/* An fd that is readable while finished reads wait to be collected. */
int store_read_fd(struct store *st);
/*
 * Take the finished reads, in the order they finished (linked by next), or
 * NULL; they are the caller's again.
 */
struct store_read *store_read_collect(struct store *st);

typedef void (*store_client_cb)(const char *client, uint64_t last_value, uint64_t recorded,
    uint64_t out_of_range, void *arg);
typedef void (*store_progress_cb)(void *arg);
/*
 * Call cb for every client in the store (used to rebuild stats at start,
 * before any store_read()) with its summary as a read's, and how many of its
 * records have a value outside 1..9223372036854775807 (counted in recorded,
 * never its last_value); 0, or -1 with the reason in why (256 bytes). It
 * reads the whole (client, value) index, almost half the file; progress,
 * if not NULL, is called on the calling thread every few milliseconds of
 * that (also within one client's records), so that a caller can say it is
 * still going. Both get arg.
 */
int store_clients(struct store *st, store_client_cb cb, store_progress_cb progress, void *arg, char *why);

/*
 * Has a sync failed, or has store_check() found the database gone? Then
 * nothing is acknowledged any more (the WAL may have a hole, or the records
 * would go to a removed file) until the daemon restarts; why (len bytes)
 * says what failed.
 */
int store_failed(struct store *st, char *why, size_t len);

/*
 * Are the database file and its WAL still the files at their paths (an
 * operator may remove or replace them while the daemon runs; the open files
 * would then take records no restart finds)? One stat(2) of each: call it
 * about once a second from the loop, off the commit path. Returns -1, with
 * why (len bytes) saying what happened, the first time it finds them gone;
 * from then on every batch fails unwritten and store_failed() says why.
 * 0 otherwise.
 */
int store_check(struct store *st, char *why, size_t len);

/*
 * Is the disk full? Yes from a commit that failed for want of space (it was
 * rolled back: nothing acknowledged is lost) until a commit succeeds, as
 * long as the filesystem of the database has no more space free than then
 * (once it has, the next commit tries again). why (len bytes) says what.
 * Loop thread only: the state changes in store_collect().
 */
int store_full(struct store *st, char *why, size_t len);

#endif /* STORE_H */
