// gemma-edge web package: the page. URL parameters (all optional):
//   ?prompt=TEXT&max_new_tokens=N&threads=N&device=wasm|webgpu&autorun=1
// The last result is window.gemmaEdge (tests and benches read it): {load, result, error}.
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const state = (window.gemmaEdge = { load: null, result: null, error: null, busy: true });
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const pending = {};

function call(type, data) {
  return new Promise((resolve, reject) => {
    pending[type] = { resolve, reject };
    worker.postMessage({ type, ...data });
  });
}

worker.onmessage = ({ data }) => {
  if (data.type === "token") {
    $("output").textContent = data.text;
    $("status").textContent = `generating: ${data.count} tokens`;
  } else if (data.type === "error") {
    state.error = data.message;
    $("status").textContent = `error: ${data.message.split("\n")[0]}`;
    for (const p of Object.values(pending)) p.reject(new Error(data.message));
  } else {
    pending[data.type].resolve(data.result);
  }
};

function stats() {
  const r = state.result;
  const parts = [`load ${(state.load.load_ms / 1000).toFixed(2)} s`,
                 `${state.load.dtype} on ${state.load.device}, ${state.load.threads} thread(s)`];
  if (r) {
    parts.push(`first token ${r.ttft_ms.toFixed(0)} ms`,
               `prefill ${r.prefill_tok_s.toFixed(1)} tok/s`,
               `decode ${r.decode_tok_s === null ? "-" : r.decode_tok_s.toFixed(1)} tok/s`);
  }
  $("stats").textContent = parts.join(" · ");
}

async function run() {
  state.busy = true;
  state.result = null;
  $("go").disabled = true;
  $("output").textContent = "";
  try {
    state.result = await call("generate", {
      prompt: $("prompt").value, max_new_tokens: Number($("max").value),
    });
    $("output").textContent = state.result.text;
    $("status").textContent = state.result.stopped ? "done (stop token)" : "done";
    stats();
  } catch (err) {
    state.error = String(err);
  } finally {
    state.busy = false;
    $("go").disabled = false;
  }
}

// benchmarks: generate from exact token ids, at least `min` new tokens (stop tokens masked)
state.generateIds = async (ids, max, min) => {
  state.busy = true;
  try {
    state.result = await call("generate", { prompt_ids: ids, max_new_tokens: max, min_new_tokens: min });
    $("output").textContent = state.result.text;
    $("status").textContent = `done (${ids.length} prompt token ids)`;
    stats();
    return state.result;
  } finally {
    state.busy = false;
  }
};

async function main() {
  if (params.has("prompt")) $("prompt").value = params.get("prompt");
  if (params.has("max_new_tokens")) $("max").value = params.get("max_new_tokens");
  const device = params.get("device") || "wasm";
  const threads = Number(params.get("threads") || navigator.hardwareConcurrency || 1);
  $("status").textContent = `loading the model (${device})...`;
  try {
    state.load = await call("load", { threads, device });
  } catch (err) {
    state.error = String(err);
    state.busy = false;
    return;
  }
  stats();
  $("status").textContent = "ready";
  $("go").disabled = false;
  $("go").onclick = run;
  state.busy = false;
  if (params.get("autorun") === "1") await run();
}

main();
