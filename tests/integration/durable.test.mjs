// Durable runs across processes on one SQLite store: the scenarios of
// lib/durable.mjs (two `agenthub serve` on one store, kill -9 mid-way, 200
// async runs each completed exactly once, tool calls counted; sync takeover;
// queue TTL; restart; same Idempotency-Key on resume; a paused hub stops).
// durable_pg.test.mjs runs the same scenarios on PostgreSQL.

import path from 'node:path';
import { durableTests } from './lib/durable.mjs';

await durableTests({ backend: 'sqlite', storageUrl: (dir) => `sqlite://${path.join(dir, 'agenthub.db')}` });
