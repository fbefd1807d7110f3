// llama.cpp as the peer a CPU user would otherwise pick: greedy completions of the same prompts on the same GGUF,
// through node-llama-cpp (npm; ships prebuilt CPU binaries of llama.cpp, so nothing compiles). Called by
// bench/cpu_generation.py; prints one JSON line {tokens, seconds, tok_s, texts}.
//
//   npm install --prefix /tmp/nlc node-llama-cpp
//   NODE_PATH=/tmp/nlc/node_modules node bench/llama_cpp_peer.mjs GGUF PROMPTS.json MAX_NEW THREADS PARALLEL
//
// PARALLEL > 1 decodes that many prompts at once, one context sequence each (llama.cpp batches them in one
// evaluation), the counterpart of our engine's batches; 1 decodes one prompt at a time.
import {createRequire} from "node:module";
import {readFileSync} from "node:fs";
import {join} from "node:path";

const [gguf, promptsFile, maxNewArg, threadsArg, parallelArg] = process.argv.slice(2);
const maxTokens = Number(maxNewArg), threads = Number(threadsArg), parallel = Number(parallelArg || 1);
// node resolves bare imports from the script's folder, not NODE_PATH: find the package through NODE_PATH here.
const require = createRequire(join(process.env.NODE_PATH || process.cwd(), "noop.js"));
const {getLlama, LlamaCompletion} = await import(require.resolve("node-llama-cpp"));

const prompts = JSON.parse(readFileSync(promptsFile, "utf8"));
const llama = await getLlama({gpu: false, build: "never", maxThreads: threads, logLevel: "error"});
const model = await llama.loadModel({modelPath: gguf});
// contextSize is per sequence: llama.cpp allocates contextSize x sequences KV cells.
const context = await model.createContext({contextSize: 1024, sequences: parallel, threads, batchSize: 512});

function encode(prompt) {
  // As the HF tokenizer: special-token text in the template is special. generateCompletion prepends BOS itself (the
  // GGUF sets add_bos_token) without checking for one, so a BOS from the text is dropped here.
  const tokens = model.tokenize(prompt, true);
  return model.tokens.bos !== null && tokens[0] === model.tokens.bos ? tokens.slice(1) : tokens;
}

let generated = 0;
const texts = new Array(prompts.length);
const workers = Array.from({length: parallel}, () => {
  const sequence = context.getSequence();
  return {sequence, completion: new LlamaCompletion({contextSequence: sequence})};
});
let next = 0;
const started = performance.now();
await Promise.all(workers.map(async ({sequence, completion}) => {
  while (next < prompts.length) {
    const index = next++;
    const tokens = [];
    texts[index] = await completion.generateCompletion(encode(prompts[index]), {
      maxTokens, temperature: 0, onToken: (chunk) => tokens.push(...chunk)});
    generated += tokens.length;
    await sequence.clearHistory();  // the next prompt is unrelated: no prefix reuse across prompts
  }
}));
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({tokens: generated, seconds, tok_s: generated / seconds, texts}));
process.exit(0);
