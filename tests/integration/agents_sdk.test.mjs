// The OpenAI Agents SDK (@openai/agents) using agenthub as its model through
// the Chat Completions API: plain runs, function tools (the SDK runs the tool
// the model asked for and sends the result back), parallel tools, and streamed
// runs, through the in-process mock, an `openai` upstream and an `anthropic`
// upstream (both agenthub mock-llm). Tracing is off: no network but loopback.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  Agent,
  OpenAIChatCompletionsModel,
  run,
  setDefaultOpenAIClient,
  setOpenAIAPI,
  setTracingDisabled,
  tool,
} from '@openai/agents';
import { startHub } from './lib/harness.mjs';
import { startMockLlm } from './lib/gateway.mjs';

const ADMIN = 'adm-agents-sdk-key';

setTracingDisabled(true);

describe('@openai/agents with agenthub as the model', () => {
  let mock;
  let hub;
  let client;
  let calls; // tool executions seen: [{name, args}]

  const weather = tool({
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    },
    strict: true,
    execute: async (args) => {
      calls.push({ name: 'get_weather', args });
      return `sunny in ${args.city}`;
    },
  });
  const clock = tool({
    name: 'get_time',
    description: 'Current time in a timezone',
    parameters: {
      type: 'object',
      properties: { tz: { type: 'string' } },
      required: ['tz'],
      additionalProperties: false,
    },
    strict: true,
    execute: async (args) => {
      calls.push({ name: 'get_time', args });
      return `noon ${args.tz}`;
    },
  });

  before(async () => {
    mock = await startMockLlm();
    hub = await startHub({
      env: { AGENTHUB_ADMIN_KEY: ADMIN },
      config: {
        providers: [
          { name: 'local', type: 'mock' },
          { name: 'up', type: 'openai', base_url: `${mock.url}/v1`, api_key: 'x', max_retries: 0 },
          { name: 'ant', type: 'anthropic', base_url: mock.url, api_key: 'x', max_retries: 0 },
        ],
        models: [
          { name: 'm', targets: [{ provider: 'local', model: 'echo' }] },
          { name: 'u', targets: [{ provider: 'up', model: 'echo' }] },
          { name: 'a', targets: [{ provider: 'ant', model: 'claude-mock' }] },
        ],
      },
    });
    client = new OpenAI({ baseURL: `${hub.url}/v1`, apiKey: ADMIN, maxRetries: 0, timeout: 20_000 });
  });

  const agentFor = (model, tools = []) =>
    new Agent({
      name: 'assistant',
      instructions: 'You are a helpful assistant. Use tools when asked.',
      model: new OpenAIChatCompletionsModel(client, model),
      tools,
    });

  for (const model of ['m', 'u', 'a']) {
    test(`plain run (${model}): finalOutput is the model's answer`, async () => {
      const result = await run(agentFor(model), 'hello agent');
      assert.equal(result.finalOutput, 'echo: hello agent');
    });

    test(`function tool (${model}): the SDK runs the tool and the model answers from its result`, async () => {
      calls = [];
      const result = await run(agentFor(model, [weather, clock]), 'call_tool get_weather {"city":"Paris"}');
      assert.deepEqual(calls, [{ name: 'get_weather', args: { city: 'Paris' } }]);
      assert.equal(typeof result.finalOutput, 'string');
      assert.match(result.finalOutput, /^tool said: /);
      assert.equal(result.finalOutput, 'tool said: sunny in Paris');
      assert.equal(result.rawResponses.length, 2, 'two model calls: the tool call, then the answer');
      for (const r of result.rawResponses) assert.ok(r.usage.totalTokens > 0, 'usage reported');
    });

    test(`parallel tools (${model}): both run, the answer joins both results`, async () => {
      calls = [];
      const result = await run(
        agentFor(model, [weather, clock]),
        'call_tool get_weather {"city":"Rome"} call_tool get_time {"tz":"UTC"}',
      );
      assert.deepEqual(
        calls.map((c) => c.name).sort(),
        ['get_time', 'get_weather'],
      );
      assert.match(result.finalOutput, /^tool said: /);
      assert.ok(result.finalOutput.includes('sunny in Rome'), result.finalOutput);
      assert.ok(result.finalOutput.includes('noon UTC'), result.finalOutput);
    });

    test(`streamed run (${model}): text deltas add up to finalOutput, tools included`, async () => {
      const plain = await run(agentFor(model), 'stream this answer please', { stream: true });
      let text = '';
      for await (const chunk of plain.toTextStream()) text += chunk;
      await plain.completed;
      assert.equal(plain.finalOutput, 'echo: stream this answer please');
      assert.equal(text, plain.finalOutput);

      calls = [];
      const withTool = await run(agentFor(model, [weather]), 'call_tool get_weather {"city":"Oslo"}', { stream: true });
      const kinds = [];
      for await (const ev of withTool) {
        if (ev.type === 'run_item_stream_event') kinds.push(ev.name);
      }
      await withTool.completed;
      assert.deepEqual(calls, [{ name: 'get_weather', args: { city: 'Oslo' } }]);
      assert.ok(kinds.includes('tool_called') && kinds.includes('tool_output'), `events: ${kinds}`);
      assert.ok(withTool.finalOutput.includes('sunny in Oslo'), withTool.finalOutput);
    });
  }

  test('setDefaultOpenAIClient + chat_completions API: an agent that names the model as a string', async () => {
    setDefaultOpenAIClient(client);
    setOpenAIAPI('chat_completions');
    calls = [];
    const agent = new Agent({ name: 'default-client', instructions: 'be brief', model: 'm', tools: [weather] });
    const result = await run(agent, 'call_tool get_weather {"city":"Lima"}');
    assert.deepEqual(calls, [{ name: 'get_weather', args: { city: 'Lima' } }]);
    assert.ok(result.finalOutput.includes('sunny in Lima'), result.finalOutput);
    const plain = await run(agent, 'just text');
    assert.equal(plain.finalOutput, 'echo: just text');
  });
});
