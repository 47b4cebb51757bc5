// The openai npm package against sidegate, configured by base URL only.
// Usage: node openai_npm_client.mjs <base URL> <chat model>...
// Prints one JSON object with what each call returned; the Python test asserts on it.
import OpenAI from "openai";

const [base, ...models] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "app-placeholder", maxRetries: 0, timeout: 20000 });
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, days: { type: "integer" } },
      required: ["city", "days"],
    },
  },
};
const out = { models: {}, list: [], embedding: null };

for (const model of models) {
  const r = {};
  const chat = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "hello from node" }],
  });
  r.content = chat.choices[0].message.content;
  r.usage = chat.usage;

  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "stream from node" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  r.streamed = "";
  r.chunks = 0;
  for await (const chunk of stream) {
    r.chunks += 1;
    if (chunk.choices.length) r.streamed += chunk.choices[0].delta.content ?? "";
    if (chunk.usage) r.streamUsage = chunk.usage;
  }

  const messages = [{ role: "user", content: "Weather in Rome?" }];
  const first = await client.chat.completions.create({ model, messages, tools: [weather] });
  const call = first.choices[0].message.tool_calls[0];
  r.toolArgs = JSON.parse(call.function.arguments);
  messages.push(first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "sunny" });
  const runner = client.chat.completions.stream({ model, messages, tools: [weather] });
  const final = await runner.finalChatCompletion();
  r.afterTool = { finish: final.choices[0].finish_reason, content: final.choices[0].message.content };

  const structured = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Forecast for Rome" }],
    response_format: {
      type: "json_schema",
      json_schema: {
        name: "Forecast",
        strict: true,
        schema: {
          type: "object",
          properties: { city: { type: "string" }, rain: { type: "boolean" } },
          required: ["city", "rain"],
          additionalProperties: false,
        },
      },
    },
  });
  r.structured = JSON.parse(structured.choices[0].message.content);
  r.structuredFinish = structured.choices[0].finish_reason;
  out.models[model] = r;
}

for await (const m of client.models.list()) out.list.push(m.id);
// The SDK asks for base64 by default and decodes it to numbers.
const emb = await client.embeddings.create({ model: "embed", input: ["a", "b"] });
out.embedding = emb.data.map((d) => d.embedding);

try {
  await client.chat.completions.create({ model: "claude", messages: [{ role: "user", content: "x" }], n: 2 });
  out.refusal = null;
} catch (e) {
  out.refusal = { status: e.status, param: e.param, code: e.code };
}
console.log(JSON.stringify(out));
