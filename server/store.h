/*
 * store.h: where records live. The daemon sees only these functions; SQLite
 * (store-sqlite.c) implements them now, a PostgreSQL store-pg.c would
 * implement the same set and be chosen at build time.
 *
 * Writes happen inside a batch: store_record() opens one lazily, and
 * store_commit() makes everything recorded since durable at once (group
 * commit). Nothing recorded in a batch may be acknowledged before its commit.
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/*
 * Open (creating if needed) the database at path. durable_full: an
 * acknowledged record survives power loss (fsync per commit); otherwise it
 * survives a crash of the process. Returns NULL with a static-or-buffered
 * reason in why (why must hold 256 bytes).
 */
struct store *store_open(const char *path, int durable_full, char *why);
/* Commit what is pending and close; the store is freed. */
void store_close(struct store *st);

/*
 * Record (client, value) in the open batch (opening one if needed). *seq is
 * the record's sequence number, the original one if it existed (*dup = 1).
 * Returns 0, or -1 on a storage error (the batch is then doomed: its commit
 * fails).
 */
int store_record(struct store *st, const char *client, uint64_t value, int64_t *seq, int *dup);
/* Is a batch open? */
int store_in_batch(struct store *st);
/* Commit the open batch: 0, or -1 (rolled back; nothing of it is stored). */
int store_commit(struct store *st);

/*
 * Commit the open batch on the store's writer thread, so the caller's loop
 * goes on while the disk syncs. Until store_commit_finish() the store may be
 * used only through store_commit_busy/_finish and store_notify_fd. Returns 0,
 * or -1 if no batch is open.
 */
int store_commit_start(struct store *st);
/* Is a started commit not yet finished? */
int store_commit_busy(struct store *st);
/* An fd that becomes readable when a started commit is over. */
int store_notify_fd(struct store *st);
/* Wait for the started commit: 0, or -1 (rolled back; nothing of it is stored). */
int store_commit_finish(struct store *st);

/* A client's committed summary: highest value and number of records. */
int store_client(struct store *st, const char *client, uint64_t *last_value, uint64_t *recorded);

typedef void (*store_client_cb)(const char *client, uint64_t last_value, uint64_t recorded, void *arg);
/* Call cb for every client in the store (used to rebuild stats at start). */
int store_clients(struct store *st, store_client_cb cb, void *arg);

typedef void (*store_record_cb)(int64_t seq, const char *client, uint64_t value, double at, void *arg);
/* Records with seq > after, in seq order, at most limit, optionally of one client (NULL: all). */
int store_records(struct store *st, const char *client, int64_t after, unsigned limit, store_record_cb cb,
    void *arg);

/* The last error message of the store (static storage, valid until the next call). */
const char *store_error(struct store *st);

#endif /* STORE_H */
