// Everyday scenarios of the TypeScript SDK (@lmstudio/sdk) against an LM Studio server.
//
//   node scenarios.cjs SDK_DIR HOST:PORT
//
// SDK_DIR holds node_modules/@lmstudio/sdk (scripts/ts-sdk.sh installs it). The catalogue is
// the emulator's default one. Prints one JSON object per line: {"name", "ok", "detail"}, then
// {"done": true}. Every scenario has its own time limit, so nothing waits forever.
"use strict";
const path = require("path");
const { createRequire } = require("module");
const [sdkDir, host] = process.argv.slice(2);
const requireFromSdk = createRequire(path.join(sdkDir, "package.json"));
const sdk = requireFromSdk("@lmstudio/sdk");
const SDK_MAJOR = Number(
  require(path.join(sdkDir, "node_modules", "@lmstudio", "sdk", "package.json")).version.split(".")[0],
);
const { LMStudioClient, Chat, rawFunctionTool } = sdk;

const TEXT = "qwen2.5-7b-instruct";
const VISION = "qwen2-vl-2b-instruct";
const EMBED = "text-embedding-nomic-embed-text-v1.5";
const UNLOADED = "gemma-3-1b-it";
const PNG_B64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
const SCHEMA = {
  type: "object",
  properties: { name: { type: "string" }, age: { type: "integer" } },
  required: ["name", "age"],
  additionalProperties: false,
};

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function rejects(promise, pattern) {
  try {
    await promise;
  } catch (error) {
    const text = String(error && error.message ? error.message : error);
    check(pattern.test(text), `error text ${JSON.stringify(text.slice(0, 300))} matches ${pattern}`);
    return text;
  }
  throw new Error(`expected a rejection matching ${pattern}`);
}

const scenarios = {
  async list(client) {
    const downloaded = await client.system.listDownloadedModels();
    check(downloaded.some(m => m.modelKey === TEXT), "text model downloaded");
    if (SDK_MAJOR >= 2) {
      check(downloaded.every(m => typeof m.publisher === "string"), "publisher on every model");
    }
    const loaded = await client.llm.listLoaded();
    check(loaded.some(m => m.identifier === TEXT), "text model loaded");
    const embeddings = await client.embedding.listLoaded();
    check(embeddings.some(m => m.identifier === EMBED), "embedding model loaded");
  },
  async model_handle_and_info(client) {
    const model = await client.llm.model(TEXT);
    check(model.identifier === TEXT, "identifier");
    const info = await (model.getInfo ?? model.getModelInfo).call(model);
    check(info.modelKey === TEXT && info.contextLength > 0, "info");
    const any = await client.llm.model();
    check(typeof any.identifier === "string", "model() with no key");
    check((await model.getContextLength()) === info.contextLength, "context length");
    check((await model.getLoadConfig()) !== undefined, "load config");
  },
  async respond_plain(client) {
    const model = await client.llm.model(TEXT);
    const result = await model.respond("Hello there");
    check(result.content.length > 0, "non-empty content");
    check(result.stats.stopReason === "eosFound", `stop reason ${result.stats.stopReason}`);
  },
  async respond_streamed(client) {
    const model = await client.llm.model(TEXT);
    const prediction = model.respond([{ role: "user", content: "Tell me a story" }]);
    let text = "";
    let count = 0;
    for await (const fragment of prediction) {
      text += fragment.content;
      count += 1;
    }
    const result = await prediction.result();
    check(count > 1, "several fragments");
    check(text === result.content, "fragments join to the content");
  },
  async respond_json_schema(client) {
    const model = await client.llm.model(TEXT);
    const result = await model.respond("A person", {
      structured: { type: "json", jsonSchema: SCHEMA },
    });
    const value = JSON.parse(result.content);
    check(typeof value.name === "string" && Number.isInteger(value.age), "schema-valid JSON");
  },
  async respond_json_mode(client) {
    // structured: { type: "json" } without a schema: "only generate valid JSON".
    const model = await client.llm.model(TEXT);
    const result = await model.respond("Anything", { structured: { type: "json" } });
    JSON.parse(result.content);
  },
  async respond_gbnf(client) {
    const model = await client.llm.model(TEXT);
    const result = await model.respond("Yes or no?", {
      structured: { type: "gbnf", gbnfGrammar: 'root ::= "yes" | "no"' },
    });
    check(["yes", "no"].includes(result.content), `grammar output ${result.content}`);
  },
  async complete(client) {
    const model = await client.llm.model(TEXT);
    const result = await model.complete("Once upon a time", { maxTokens: 8 });
    check(result.content.length > 0, "completion text");
  },
  async cancel(client) {
    const model = await client.llm.model(TEXT);
    const prediction = model.respond("A long answer please", { maxTokens: 400 });
    let seen = 0;
    for await (const _fragment of prediction) {
      seen += 1;
      if (seen === 1) await prediction.cancel();
    }
    const result = await prediction.result();
    check(result.stats.stopReason === "userStopped", `stop reason ${result.stats.stopReason}`);
  },
  async unload_during_prediction(client) {
    const model = await client.llm.load(TEXT, { identifier: "ts-unloaded", verbose: false });
    const prediction = model.respond("A long answer please", { maxTokens: 400 });
    let seen = 0;
    for await (const _fragment of prediction) {
      seen += 1;
      if (seen === 1) await client.llm.unload("ts-unloaded");
    }
    const result = await prediction.result();
    check(result.stats.stopReason === "modelUnloaded", `stop reason ${result.stats.stopReason}`);
  },
  async abort_signal(client) {
    const model = await client.llm.model(TEXT);
    const controller = new AbortController();
    const prediction = model.respond("A long answer please", {
      maxTokens: 400,
      signal: controller.signal,
    });
    let stopped = "";
    try {
      for await (const _fragment of prediction) controller.abort();
      stopped = (await prediction.result()).stats.stopReason;
    } catch (error) {
      stopped = "rejected";
    }
    check(["userStopped", "rejected"].includes(stopped), `aborted (${stopped})`);
  },
  async max_tokens(client) {
    const model = await client.llm.model(TEXT);
    const result = await model.respond("Go on", { maxTokens: 3 });
    check(result.stats.predictedTokensCount <= 3, "at most 3 tokens");
    check(result.stats.stopReason === "maxPredictedTokensReached", result.stats.stopReason);
  },
  async stop_strings(client) {
    const model = await client.llm.model(TEXT);
    const plain = await model.respond("Say something");
    const words = plain.content.split(" ");
    check(words.length > 2, "a few words to cut");
    const stop = " " + words[2];
    const result = await model.respond("Say something", { stopStrings: [stop] });
    check(!result.content.includes(stop), "cut before the stop string");
    check(result.stats.stopReason === "stopStringFound", result.stats.stopReason);
    if (SDK_MAJOR >= 2) {
      check(result.stats.stopString === stop, `stats.stopString ${result.stats.stopString}`);
      check(result.stats.totalTimeSec >= 0, `stats.totalTimeSec ${result.stats.totalTimeSec}`);
    }
  },
  async image_on_vision_model(client) {
    const image = await client.files.prepareImageBase64("red.png", PNG_B64);
    const model = await client.llm.model(VISION);
    const result = await model.respond([{ role: "user", content: "What is it?", images: [image] }]);
    check(result.content.length > 0, "answer about the image");
  },
  async file_path(client) {
    // FileHandle.getFilePath(): the absolute path of the uploaded file on LM Studio's machine.
    const image = await client.files.prepareImageBase64("red.png", PNG_B64);
    const file = await image.getFilePath();
    check(path.isAbsolute(file), `an absolute path (${file})`);
    const content = require("fs").readFileSync(file).toString("base64");
    check(content === PNG_B64, "the file holds what was uploaded");
  },
  async image_on_text_model(client) {
    const image = await client.files.prepareImageBase64("red.png", PNG_B64);
    const model = await client.llm.model(TEXT);
    await rejects(
      model.respond([{ role: "user", content: "What is it?", images: [image] }]),
      /does not support images/,
    );
  },
  async embeddings(client) {
    const model = await client.embedding.model(EMBED);
    const { embedding } = await model.embed("hello");
    check(Array.isArray(embedding) && embedding.length > 0, "a vector");
    const tokens = await model.tokenize("hello world");
    check(tokens.length >= 2, "embedding tokens");
  },
  async tokenize(client) {
    const model = await client.llm.model(TEXT);
    const tokens = await model.tokenize("hello world");
    check(tokens.length > 0 && tokens.every(Number.isInteger), "token ids");
    check((await model.countTokens("hello world")) === tokens.length, "count matches");
  },
  async prompt_template(client) {
    const model = await client.llm.model(TEXT);
    const formatted = await model.applyPromptTemplate(Chat.from([{ role: "user", content: "Hi" }]));
    check(formatted.includes("Hi"), "the message is in the prompt");
  },
  async load_and_unload(client) {
    const model = await client.llm.load(TEXT, { identifier: "ts-extra" });
    check(model.identifier === "ts-extra", "explicit identifier");
    check((await client.llm.listLoaded()).some(m => m.identifier === "ts-extra"), "listed");
    await model.unload();
    check(!(await client.llm.listLoaded()).some(m => m.identifier === "ts-extra"), "unloaded");
  },
  async load_abort(client) {
    // An aborted load is cancelled on the server too: the model does not end up loaded.
    const controller = new AbortController();
    const loading = client.llm.load(UNLOADED, {
      identifier: "ts-aborted",
      signal: controller.signal,
      verbose: false,
      onProgress: () => controller.abort(),
    });
    await rejects(loading, /abort/i);
    await new Promise(resolve => setTimeout(resolve, 600));  // longer than the whole load
    const loaded = (await client.llm.listLoaded()).map(m => m.identifier);
    check(!loaded.includes("ts-aborted"), `not loaded after the abort (${loaded})`);
  },
  async get_or_load(client) {
    const progress = [];
    const model = await client.llm.model(UNLOADED, { onProgress: p => progress.push(p) });
    check(model.identifier === UNLOADED, "loaded on demand");
    check((await model.respond("Hi")).content.length > 0, "answers");
    await model.unload();
  },
  async bad_keys(client) {
    await rejects(client.llm.model("no-such-model"), /no-such-model/);
    await rejects(client.embedding.model(TEXT), /./);
  },
  async concurrent_predictions(client) {
    const model = await client.llm.model(TEXT);
    const [a, b] = await Promise.all([model.respond("First"), model.respond("Second")]);
    check(a.content.length > 0 && b.content.length > 0, "both answered");
  },
  async max_parallel_predictions(client) {
    // A load setting the server applies (found by a probe: reported back, not applied):
    // with one slot, each prediction starts after the one before it ended. SDK 1.5 has no
    // such setting.
    if (SDK_MAJOR < 2) return;
    const model = await client.llm.load(TEXT, {
      identifier: "ts-one-slot",
      config: { maxParallelPredictions: 1 },
      verbose: false,
    });
    try {
      check((await model.getLoadConfig()).maxParallelPredictions === 1, "reported");
      const spans = await Promise.all(
        ["One", "Two", "Three"].map(async prompt => {
          let first;
          const prediction = model.respond(prompt, {
            maxTokens: 40,
            onPredictionFragment: () => { first = first ?? performance.now(); },
          });
          await prediction;
          return [first, performance.now()];
        }),
      );
      spans.sort((x, y) => x[0] - y[0]);
      for (let i = 1; i < spans.length; i++) {
        check(spans[i][0] >= spans[i - 1][1] - 1, `prediction ${i} began before ${i - 1} ended`);
      }
    } finally {
      await model.unload();
    }
  },
  async act_with_tool(client) {
    const model = await client.llm.model(TEXT);
    const calls = [];
    const add = rawFunctionTool({
      name: "add",
      description: "Add two integers",
      parametersJsonSchema: {
        type: "object",
        properties: { a: { type: "integer" }, b: { type: "integer" } },
        required: ["a", "b"],
      },
      implementation: ({ a, b }) => {
        calls.push([a, b]);
        return a + b;
      },
    });
    const messages = [];
    const result = await model.act("What is 2 + 3?", [add], { onMessage: m => messages.push(m) });
    check(calls.length === 1, `the tool was called once (${calls.length})`);
    check(result.rounds === 2, `two rounds (${result.rounds})`);
    check(messages.length === 3, `assistant, tool result, assistant (${messages.length})`);
  },
  async model_variants(client) {
    if (SDK_MAJOR < 2) return; // listDownloadedModelVariants() is new in 2.x
    const variants = await client.system.listDownloadedModelVariants(TEXT);
    check(variants.length === 1 && variants[0].modelKey === TEXT, "the model's one variant");
    await rejects(client.system.listDownloadedModelVariants("no-such-model"), /no-such-model/);
  },
  async system_notify(client) {
    // LM Studio shows the notification and answers with nothing.
    const answer = await client.system.notify({ title: "Done", description: "All good" });
    check(answer === undefined, `notify answers nothing (${JSON.stringify(answer)})`);
  },
  async base_prediction_config(client) {
    if (SDK_MAJOR < 2) return; // getBasePredictionConfig() is new in 2.x
    const model = await client.llm.model(TEXT);
    const config = await model.getBasePredictionConfig();
    check(typeof config.temperature === "number", `a prediction config (${JSON.stringify(config)})`);
    await rejects(client.llm.createDynamicHandle("no-such-model").getBasePredictionConfig(), /./);
  },
  async processing_state(client) {
    if (SDK_MAJOR < 2) return; // getInstanceProcessingState() is new in 2.x
    // An instance of its own, so that no other scenario's prediction is in its queue.
    const model = await client.llm.load(TEXT, { identifier: "ts-state", verbose: false });
    const idle = await model.getInstanceProcessingState();
    check(idle.status === "idle" && idle.queued === 0, `idle (${JSON.stringify(idle)})`);
    const prediction = model.respond("A long answer please", { maxTokens: 400 });
    let busy;
    for await (const _fragment of prediction) {
      if (busy !== undefined) continue;
      busy = await model.getInstanceProcessingState();
      await prediction.cancel();
    }
    await prediction.result();
    check(busy.status === "generating" && busy.queued === 1, `busy (${JSON.stringify(busy)})`);
    await model.unload();
    const embedding = await client.embedding.model(EMBED);
    const state = await embedding.getInstanceProcessingState();
    check(state.status === "idle", `embedding model idle (${JSON.stringify(state)})`);
  },
  async tool_choice(client) {
    if (SDK_MAJOR < 2) return; // toolChoice is new in 2.x
    const model = await client.llm.model(TEXT);
    const rawTools = {
      type: "toolArray",
      tools: [{ type: "function", function: { name: "add", description: "Add", parameters: {
        type: "object", properties: { a: { type: "integer" } }, required: ["a"] } } }],
    };
    const auto = await model.respond("What is 2 + 3?", { rawTools });
    check(auto.stats.stopReason === "toolCalls", `auto calls the tool (${auto.stats.stopReason})`);
    const none = await model.respond("What is 2 + 3?", {
      rawTools,
      toolChoice: { type: "generic", mode: "none" },
    });
    check(none.stats.stopReason === "eosFound", `none calls no tool (${none.stats.stopReason})`);
    // After the model's own answer, "auto" has nothing to call; "required" calls anyway.
    const answered = Chat.from([
      { role: "user", content: "What is 2 + 3?" },
      { role: "assistant", content: "Five." },
    ]);
    const required = await model.respond(answered, {
      rawTools,
      toolChoice: { type: "generic", mode: "required" },
    });
    check(required.stats.stopReason === "toolCalls", `required (${required.stats.stopReason})`);
    // Found by a probe: LM Studio's default tool use works with every model, so "required"
    // makes one not trained for tools call one too (it was ignored); "auto" leaves it to
    // the model, and the emulator's untrained models answer in text.
    const untrained = await client.llm.model("llama-3.2-1b-instruct-mlx");
    const forced = await untrained.respond("What is 2 + 3?", {
      rawTools,
      toolChoice: { type: "generic", mode: "required" },
    });
    check(forced.stats.stopReason === "toolCalls", `required, untrained (${forced.stats.stopReason})`);
    const left = await untrained.respond("What is 2 + 3?", { rawTools });
    check(left.stats.stopReason === "eosFound", `auto, untrained (${left.stats.stopReason})`);
  },
  async unknown_draft_model(client) {
    // A draft model LM Studio does not have cannot be loaded for speculative decoding: the
    // prediction fails, naming it, instead of running without a draft.
    const model = await client.llm.model(TEXT);
    await rejects(model.respond("Hi", { draftModel: "no-such-draft", maxTokens: 3 }), /no-such-draft/);
    check((await model.respond("Hi", { maxTokens: 3 })).content.length > 0, "answers without one");
  },
  async preload_draft_model(client) {
    // Preloading a draft model answers nothing; one that cannot draft fails as in a prediction.
    const model = await client.llm.model(TEXT);
    const answer = await model.unstable_preloadDraftModel(UNLOADED);
    check(answer === undefined, `preloading answers nothing (${JSON.stringify(answer)})`);
    await rejects(model.unstable_preloadDraftModel("no-such-draft"), /no-such-draft/);
    await rejects(model.unstable_preloadDraftModel(EMBED), /not an LLM/);
  },
  async when_disconnected(client) {
    // The "alive" channel stays open while the client is connected.
    let resolved = false;
    client.system.whenDisconnected().then(() => (resolved = true), () => (resolved = true));
    await new Promise(resolve => setTimeout(resolve, 300));
    check(!resolved, "whenDisconnected() waits while the client is connected");
    check((await client.system.getLMStudioVersion()).version, "the client still works");
  },
  async diagnostics_logs(client) {
    // unstable_streamLogs() gets LM Studio's log of each prediction's input, until stop().
    const logger = recordingLogger();
    const own = new LMStudioClient({ baseUrl: `ws://${host}`, logger });
    const logs = [];
    const stop = own.diagnostics.unstable_streamLogs(log => logs.push(log));
    const model = await client.llm.model(TEXT);
    // The log channel opens on its own socket: predict until it is there.
    for (let i = 0; i < 50 && logs.length === 0; i += 1) {
      await model.respond("Log me", { maxTokens: 2 });
      await new Promise(resolve => setTimeout(resolve, 50));
    }
    stop();
    await new Promise(resolve => setTimeout(resolve, 200));
    await own[Symbol.asyncDispose]();
    const input = logs.find(log => log.data.type === "llm.prediction.input");
    check(input !== undefined, `a prediction input was logged (${JSON.stringify(logs)})`);
    check(input.data.modelIdentifier === TEXT && input.data.input.includes("Log me"), "its input");
    check(typeof input.timestamp === "number", "a timestamp");
    check(logger.warnings.length === 0, `no warnings: ${logger.warnings.join("; ")}`);
  },
  async experiment_flags(client) {
    // getExperimentFlags() lists the flags that are on.
    await client.system.unstable_setExperimentFlag("ts-flag", true);
    check((await client.system.unstable_getExperimentFlags()).includes("ts-flag"), "on");
    await client.system.unstable_setExperimentFlag("ts-flag", false);
    check(!(await client.system.unstable_getExperimentFlags()).includes("ts-flag"), "off");
  },
  async system_info(client) {
    const version = await client.system.getLMStudioVersion();
    check(typeof version.version === "string", "version");
    // The reasoning models send reasoning under a schema, as LM Studio does from 0.4.19 on:
    // the version reported must not say an older server (whose clients expect none).
    const [major, minor, patch] = version.version.split(".").map(Number);
    check(major > 0 || minor > 4 || (minor === 4 && patch >= 19), `version ${version.version}`);
    if (typeof client.system.getInfo === "function") {
      const info = await client.system.getInfo();
      check(typeof info.version === "string" && Number.isInteger(info.pid), "info");
    }
  },
};

async function main() {
  // The SDK reports a frame its zod schemas reject (and a server's communicationWarning)
  // only in its log, dropping the frame: a scenario during which it logged a warning or an
  // error fails, even if its own checks passed.
  const logger = recordingLogger();
  const client = new LMStudioClient({ baseUrl: `ws://${host}`, logger });
  for (const [name, run] of Object.entries(scenarios)) {
    let ok = true;
    let detail = "";
    const logged = logger.warnings.length;
    try {
      await withTimeout(run(client), 15000, name);
    } catch (error) {
      ok = false;
      detail = String(error && error.stack ? error.stack : error).slice(0, 1500);
    }
    const warnings = logger.warnings.slice(logged);
    if (ok && warnings.length > 0) {
      ok = false;
      detail = `the SDK logged: ${warnings.join(" | ")}`.slice(0, 1500);
    }
    process.stdout.write(JSON.stringify({ name, ok, detail }) + "\n");
  }
  process.stdout.write(JSON.stringify({ done: true }) + "\n");
  process.exit(0);
}

function recordingLogger() {
  // Keeps the warnings and errors; info (load progress, "verbose logging") is dropped.
  const warnings = [];
  const keep = (...args) => warnings.push(args.map(String).join(" "));
  return { warnings, info: () => {}, error: keep, warn: keep, debug: () => {} };
}

main().catch(error => {
  process.stdout.write(JSON.stringify({ fatal: String(error && error.stack) }) + "\n");
  process.exit(1);
});
