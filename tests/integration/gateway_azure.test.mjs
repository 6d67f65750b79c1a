// The azure provider type: Azure OpenAI's URL layout (deployment in the path,
// api-version in the query), the api-key header, and full answers through
// agenthub mock-llm's Azure paths (chat, streaming, embeddings).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import { startHub } from './lib/harness.mjs';
import { startMockLlm } from './lib/gateway.mjs';

const ADMIN = 'adm-gateway-azure-key-0123456789';

describe('azure provider', () => {
  let hub, mock, rec, client;
  const seen = [];

  before(async () => {
    mock = await startMockLlm();
    // A recording upstream: what exactly does the gateway send to Azure?
    rec = http.createServer((rq, rs) => {
      let raw = '';
      rq.on('data', (d) => (raw += d));
      rq.on('end', () => {
        seen.push({ url: rq.url, headers: rq.headers, body: JSON.parse(raw || '{}') });
        rs.writeHead(200, { 'content-type': 'application/json' });
        rs.end(JSON.stringify({
          id: 'chatcmpl-azure-1', object: 'chat.completion', created: 1, model: 'my-deployment',
          choices: [{ index: 0, message: { role: 'assistant', content: 'from azure' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
        }));
      });
    });
    await new Promise((r) => rec.listen(0, '127.0.0.1', r));
    hub = await startHub({
      env: { AGENTHUB_ADMIN_KEY: ADMIN },
      config: {
        providers: [
          { name: 'az', type: 'azure', base_url: `http://127.0.0.1:${rec.address().port}`, api_key: 'azure-secret', api_version: '2024-10-21' },
          { name: 'azmock', type: 'azure', base_url: mock.url, api_key: 'k' },
        ],
        models: [
          { name: 'az', targets: [{ provider: 'az', model: 'my-deployment' }] },
          { name: 'azm', targets: [{ provider: 'azmock', model: 'echo' }] },
        ],
      },
    });
    client = new OpenAI({ baseURL: `${hub.url}/v1`, apiKey: ADMIN, maxRetries: 0 });
  });
  after(() => new Promise((r) => rec.close(r)));

  test('deployment in the path, api-version in the query, the key as api-key', async () => {
    const r = await client.chat.completions.create({ model: 'az', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(r.choices[0].message.content, 'from azure');
    const s = seen.at(-1);
    assert.equal(s.url, '/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21');
    assert.equal(s.headers['api-key'], 'azure-secret');
    assert.equal(s.headers.authorization, undefined, 'no bearer token to Azure');
  });

  test('through mock-llm: chat, stream and embeddings', async () => {
    const r = await client.chat.completions.create({ model: 'azm', messages: [{ role: 'user', content: 'hello azure' }] });
    assert.equal(r.choices[0].message.content, 'echo: hello azure');
    const stream = await client.chat.completions.create({ model: 'azm', stream: true, messages: [{ role: 'user', content: 'hello azure' }] });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    assert.equal(text, 'echo: hello azure');
    const e = await client.embeddings.create({ model: 'azm', input: 'abc', encoding_format: 'float' });
    assert.ok(e.data[0].embedding.length > 0);
  });
});
