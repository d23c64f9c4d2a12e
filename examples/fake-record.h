/*
 * fake-record.h: an in-process stand-in for a record-count server, for the
 * examples: recording a value "takes" a fixed latency on a libevent timer.
 */
#ifndef FAKE_RECORD_H
#define FAKE_RECORD_H

#include <event2/event.h>

#include "dfr.h"

/* Latency of one fake round trip. */
#define FAKE_RECORD_MS 50

/*
 * Record value; the returned deferred (caller's reference) fires with NULL
 * after FAKE_RECORD_MS on base.
 */
struct dfr *fake_record(struct event_base *base, int value);

#endif
