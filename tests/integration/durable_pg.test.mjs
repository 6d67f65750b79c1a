// Durable runs across processes on one PostgreSQL: the scenarios of
// lib/durable.mjs (the same as durable.test.mjs on SQLite) with every hub's
// storage.url on a throwaway PostgreSQL 15 this file starts on loopback
// (lib/pg.mjs), a new database per scenario: two `agenthub serve` on one
// database, 200 async runs with slow model steps and an HTTP tool, kill -9 one
// hub mid-way, every run completed exactly once, tool calls counted.

import { test } from 'node:test';
import { durableTests } from './lib/durable.mjs';
import { startPostgres, PG_SKIP } from './lib/pg.mjs';

const pg = await startPostgres();
if (!pg) test('durable runs on PostgreSQL', { skip: PG_SKIP }, () => {});
else await durableTests({ backend: 'postgres', storageUrl: () => pg.newDatabase() });
