// gemma-edge web package: the model runs here, off the page's thread.
// transformers.js loads the package directory itself ("." is the model: config.json,
// tokenizer files, onnx/...); onnxruntime-web's WASM files come from ./runtime/, never a CDN.
import { env, pipeline, Tensor } from "./runtime/transformers.min.js";

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useBrowserCache = false;
env.backends.onnx.wasm.wasmPaths = new URL("./runtime/", self.location).href;
env.backends.onnx.wasm.proxy = false;

let generator = null;
let web = null;

async function load({ threads, device }) {
  const started = performance.now();
  web = await (await fetch("./web.json")).json();
  env.backends.onnx.wasm.numThreads = self.crossOriginIsolated ? threads : 1;
  generator = await pipeline("text-generation", ".", { dtype: web.dtype, device });
  web.chatTemplate = web.chat ? await (await fetch("./chat_template.jinja")).text() : null;
  return {
    load_ms: performance.now() - started, dtype: web.dtype, device, chat: web.chat,
    threads: env.backends.onnx.wasm.numThreads, isolated: self.crossOriginIsolated,
  };
}

async function generate({ prompt, prompt_ids, max_new_tokens, min_new_tokens }) {
  const tokenizer = generator.tokenizer;
  let text = prompt;
  if (web.chat && !prompt_ids) {
    // Gemma's template starts with <bos>: the rendered text is tokenized without adding it again
    text = tokenizer.apply_chat_template([{ role: "user", content: prompt }], {
      tokenize: false, add_generation_prompt: true, chat_template: web.chatTemplate,
    });
  }
  // token ids given (benchmarks): exactly those, else the text through the tokenizer
  const inputs = prompt_ids ? idsInputs(prompt_ids) : tokenizer(text, { add_special_tokens: !web.chat });
  const promptIds = Array.from(inputs.input_ids.data, Number);
  const ids = [];
  const times = [];
  let started = 0;
  const streamer = {
    put(value) {
      if (!started) { started = performance.now(); return; } // the prompt
      times.push(performance.now());
      ids.push(Number(value[0][0]));
      const stop = web.stop_token_ids.includes(ids.at(-1));
      const shown = stop ? ids.slice(0, -1) : ids;
      self.postMessage({ type: "token", text: tokenizer.decode(shown, { skip_special_tokens: true }),
                         count: ids.length });
    },
    end() {},
  };
  const t0 = performance.now();
  await generator.model.generate({
    ...inputs, max_new_tokens, min_new_tokens: min_new_tokens || 0, do_sample: false,
    eos_token_id: web.stop_token_ids, streamer,
  });
  const ttft = times[0] - t0;
  const decodeMs = times.length > 1 ? times.at(-1) - times[0] : 0;
  const generated = ids.at(-1) !== undefined && web.stop_token_ids.includes(ids.at(-1)) ? ids.slice(0, -1) : ids;
  return {
    prompt_ids: promptIds, ids, text: tokenizer.decode(generated, { skip_special_tokens: true }),
    ttft_ms: ttft, prefill_tok_s: promptIds.length / (ttft / 1000),
    decode_tok_s: decodeMs > 0 ? (times.length - 1) / (decodeMs / 1000) : null,
    stopped: ids.length > 0 && web.stop_token_ids.includes(ids.at(-1)),
  };
}

function idsInputs(ids) {
  const n = ids.length;
  return {
    input_ids: new Tensor("int64", BigInt64Array.from(ids, BigInt), [1, n]),
    attention_mask: new Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]),
  };
}

self.onmessage = async ({ data }) => {
  try {
    const result = data.type === "load" ? await load(data) : await generate(data);
    self.postMessage({ type: data.type, result });
  } catch (err) {
    self.postMessage({ type: "error", message: String(err && err.stack || err) });
  }
};
