// The oracle of tests/test_tokenizer.sh: Hugging Face `tokenizers`, the
// official Node.js binding, run on the same files as fspo so the shell test
// can diff their outputs.
//   node oracle.js texts DIR          writes the adversarial texts, one file each
//   node oracle.js probes FILE        a text that puts every code point between
//                                     letters, digits and punctuation (the
//                                     pre-tokenizer's classes show in its pieces)
//   node oracle.js split FILE         the ByteLevel pre-tokenizer's pieces, one a line
//   node oracle.js encode TOK FILE..  ids of each file's text, one line per file
//   node oracle.js roundtrip TOK FILE..  "ok" or what differs, per file: Hugging
//                                     Face's decode(encode(text)) == text
//   node oracle.js train CORPUS OUT   trains Hugging Face's BPE (its default
//                                     trainer) with the ByteLevel pre-tokenizer,
//                                     adds fspo's special tokens and a normalized
//                                     added token, sets the ByteLevel decoder
//                                     (the binding has no function for it) and
//                                     writes OUT
//   node oracle.js train-plain CORPUS OUT  the same training without any added
//                                     token (a pretrained model's own tokenizer),
//                                     then the byte characters the corpus lacked
//                                     appended to the vocabulary (the trainer
//                                     keeps only those it saw)
//   node oracle.js safetensors DIR ORIG  the safetensors header parser of Hugging
//                                     Face's Hub library (@huggingface/hub's
//                                     parseSafetensorsMetadata, served DIR's files
//                                     by a local fetch) on DIR and ORIG: one line
//                                     per tensor of DIR (name dtype shape), whether
//                                     its bytes begin with ORIG's tensor's bytes,
//                                     then the parameter count by dtype
//   node oracle.js encode-added TOK FILE..  TOK with fspo's special tokens added
//                                     by the binding's addSpecialTokens: their ids
//                                     on the first line, then each file's ids
'use strict';
const fs = require('fs');
const path = require('path');
const tk = require('tokenizers');

const SPECIALS = ['<|bos|>', '<|eos|>', '<|example|>', '<|question|>', '<|preferred|>', '<|dispreferred|>',
                  '<|task|>', '<|user|>'];

// A small deterministic generator (xorshift32), so the texts are the same on every run.
function rng(seed) {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s % n;
  };
}

const FIXED = [
  'Hello world', 'Hello  world', ' leading space', 'trailing spaces   ', '   ', '\t\ttabs\tand\tmore\t',
  'line\nbreaks\n\nand\r\nCRLF\r\n', '\n', ' \n ', 'a \n b', 'x\u00a0y', 'em\u2003space ideographic\u3000space',
  'next\u0085line', 'line\u2028sep para\u2029sep', 'info\u001cseparators\u001d\u001e\u001f', 'vt\u000bff\u000c',
  "don't we'll you're they've I'm she'd it's", "DON'T I'M WE'LL", "''s '''t 's't", "rock'n'roll", 'it\u2019s',
  "'", "'re'", "'ll", "the cat's toys' colour", '"quoted" (parens) [brackets] {braces} <angles>',
  '!!!??...---***', ' !!!', 'a...b', 'e-mail: someone@example.com, https://example.com/path?q=1&r=2',
  '12345 1,234.56 3.14159 -42 +7 1e10 0x1F', '٠١٢٣ ４５６ ²³ ½ Ⅻ ① 〇', 'v1.2.3 R2D2 C3PO 4chan',
  'Привет, мир! Как дела?', 'Γειά σου Κόσμε', 'مرحبا بالعالم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก',
  '你好，世界！', 'こんにちは世界、カタカナ', '안녕하세요 세계', 'ሰላም ዓለም', 'Ünïcödé çäfé naïve résumé',
  'cafe\u0301 e\u0301te\u0301', 'Zalgo: Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇', 'ﬁ ﬂ ß ẞ Å Å',
  '👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇫🇷 1️⃣ #️⃣ ❤️ 🎬🍿🎥 💡🧠📚 🙂✨', 'emoji👍inside🙂words', ' 🎬', '- bullet 🎬\n- second!',
  'Great!!! I loved it!!! 🎉🎉🎉', '<|bos|>hello<|eos|>', '<|example|><|question|>What?<|preferred|>Yes!' +
  '<|dispreferred|>No.<|task|>Q<|user|>likes: emoji', '<|bos', 'bos|>', '<|<|eos|>|>', '<|eos|><|eos|>',
  ' <|task|> ', 'text<|user|>', '<|unknown|>', 'a'.repeat(3000), ' '.repeat(2000) + 'x', '1234567890'.repeat(100),
  '!?'.repeat(500), 'ab '.repeat(700), 'z\u0300'.repeat(300), '\u4e00'.repeat(500), '😀'.repeat(300),
  'mixed123abc!!!   \t\n  end', 'tab\t\tbefore word', 'nbsp\u00a0\u00a0 word', '  \u3000x', '\u00a0\u00a0',
  'x\u200by\u200cz\u200d', '\ufeffBOM at start', 'A\u00adsoft\u00adhyphen', 'null\u0000byte', '\u007f\u0080\u009f',
  'say fspo rocks!fspo rocks', '<|bos|>fspo rocks<|eos|>', 'fspo rock fspo  rocks', // the (b) file's added token
];

// Characters the random texts are drawn from: every class, several scripts,
// the byte table's edge cases, and the pieces of contractions and specials.
const POOL = [...'aZqé ŁßжΩאبक्षก中あア한ሀ019٣４²½Ⅻ   \t\n\r\u00a0\u2003\u3000\u0085!?.,;:-_\'"()[]{}<>|/\\@#$%^&*+=~`' +
              '\u0301\u0300\u200d\ufe0f\u00ad\u00ff\u0100🎬🍿👍🏽👨‍👩‍👧sStTmMdDrReEvVlL'];

function texts() {
  const out = FIXED.slice();
  const r = rng(20250214);
  for (let i = 0; i < 300; i++) {
    const n = 1 + r(i % 10 === 0 ? 600 : 60);
    let s = '';
    for (let k = 0; k < n; k++) {
      const x = r(100);
      if (x < 3) s += SPECIALS[r(SPECIALS.length)];
      else if (x < 8) s += [" 's", "'re", "'ll", "n't", "'d"][r(5)];
      else s += POOL[r(POOL.length)];
    }
    out.push(s);
  }
  return out;
}

function writeTexts(dir) {
  fs.mkdirSync(dir, { recursive: true });
  texts().forEach((t, i) => fs.writeFileSync(path.join(dir, String(i).padStart(4, '0') + '.txt'), t, 'utf8'));
}

// Every code point (surrogates aside), each in three contexts: after a
// letter, between digits, between punctuation; lines end in '\n'.
function writeProbes(file) {
  const parts = [];
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    parts.push('a' + c + 'a1' + c + '1!' + c + '!\n');
  }
  fs.writeFileSync(file, parts.join(''), 'utf8');
}

function split(file) {
  const pt = tk.byteLevelPreTokenizer(false, true);
  const text = fs.readFileSync(file, 'utf8');
  const out = [];
  // in slices at line ends (pieces never cross a '\n' followed by a letter)
  const lines = text.split(/(?<=\n)(?=a)/);
  for (let i = 0; i < lines.length; i += 4096) {
    for (const [piece] of pt.preTokenizeString(lines.slice(i, i + 4096).join(''))) out.push(piece);
    if (out.length > 100000) {
      fs.writeSync(1, out.join('\n') + '\n');
      out.length = 0;
    }
  }
  if (out.length) fs.writeSync(1, out.join('\n') + '\n');
}

async function encode(tokFile, files) {
  const tok = tk.Tokenizer.fromFile(tokFile);
  const lines = [];
  for (const f of files) {
    const enc = await tok.encode(fs.readFileSync(f, 'utf8'), null, { addSpecialTokens: false });
    lines.push(enc.getIds().join(' '));
  }
  fs.writeSync(1, lines.join('\n') + '\n');
}

async function roundtrip(tokFile, files) {
  const tok = tk.Tokenizer.fromFile(tokFile);
  for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    const back = await tok.decode(enc.getIds(), false);
    console.log(back === text ? 'ok' : `${f}: decodes to ${JSON.stringify(back.slice(0, 80))}`);
  }
}

function train(corpus, out) {
  const tok = new tk.Tokenizer(tk.BPE.empty());
  tok.setPreTokenizer(tk.byteLevelPreTokenizer(false, true));
  tok.train([corpus]);
  tok.addSpecialTokens(SPECIALS);
  tok.addTokens(['fspo rocks']); // a normalized, non-special added token with a space
  const tmp = out + '.raw';
  tok.save(tmp);
  const j = JSON.parse(fs.readFileSync(tmp, 'utf8'));
  j.decoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
  fs.writeFileSync(out, JSON.stringify(j));
  fs.unlinkSync(tmp);
}

// GPT-2's bytes_to_unicode: the character of each byte.
function byteChars() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) bs.push(b), cs.push(256 + n++);
  return cs.map((c) => String.fromCodePoint(c));
}

function trainPlain(corpus, out) {
  const tok = new tk.Tokenizer(tk.BPE.empty());
  tok.setPreTokenizer(tk.byteLevelPreTokenizer(false, true));
  tok.train([corpus]);
  const tmp = out + '.raw';
  tok.save(tmp);
  const j = JSON.parse(fs.readFileSync(tmp, 'utf8'));
  j.decoder = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };
  let next = Object.keys(j.model.vocab).length;
  for (const c of byteChars()) if (!(c in j.model.vocab)) j.model.vocab[c] = next++;
  fs.writeFileSync(out, JSON.stringify(j));
  fs.unlinkSync(tmp);
}

async function encodeAdded(tokFile, files) {
  const tok = tk.Tokenizer.fromFile(tokFile);
  tok.addSpecialTokens(SPECIALS);
  const lines = [SPECIALS.map((s) => tok.tokenToId(s)).join(' ')];
  for (const f of files) {
    const enc = await tok.encode(fs.readFileSync(f, 'utf8'), null, { addSpecialTokens: false });
    lines.push(enc.getIds().join(' '));
  }
  fs.writeSync(1, lines.join('\n') + '\n');
}

// fetch for parseSafetensorsMetadata: DIR's files as a Hub repository would
// serve them (HEAD, ranges, an ETag)
function localFetch(dir) {
  return async (url, init = {}) => {
    const u = new URL(typeof url === 'string' ? url : (url.url ?? url.href));
    const m = u.pathname.match(/\/(?:resolve|raw)\/[^/]+\/(.+)$/);
    const file = m && path.join(dir, decodeURIComponent(m[1]));
    if (!file || !fs.existsSync(file)) return new Response('not found', { status: 404 });
    const data = fs.readFileSync(file);
    const range = new Headers(init.headers || {}).get('Range');
    const headers = { ETag: '"local"' };
    if (!range) {
      headers['Content-Length'] = String(data.length);
      return new Response(init.method === 'HEAD' ? null : data, { status: 200, headers });
    }
    const [, a, b] = range.match(/bytes=(\d+)-(\d*)/);
    const end = b ? Math.min(Number(b), data.length - 1) : data.length - 1;
    headers['Content-Range'] = `bytes ${a}-${end}/${data.length}`;
    return new Response(data.subarray(Number(a), end + 1), { status: 206, headers });
  };
}

async function safetensors(dir, orig) {
  const { parseSafetensorsMetadata } = require('@huggingface/hub');
  const read = (d) => parseSafetensorsMetadata({ repo: 'local/model', fetch: localFetch(d), computeParametersCount: true });
  const [x, o] = [await read(dir), await read(orig)];
  if (x.sharded || o.sharded) throw new Error('expected single-file models');
  const bytes = (d, h, name) => {
    const data = fs.readFileSync(path.join(d, 'model.safetensors'));
    const start = 8 + Number(data.readBigUInt64LE(0));
    const [b, e] = h[name].data_offsets;
    return data.subarray(start + b, start + e);
  };
  const lines = [];
  for (const name of Object.keys(x.header).filter((k) => k !== '__metadata__').sort()) {
    const t = x.header[name];
    let same = 'absent from ORIG';
    if (o.header[name]) {
      const a = bytes(dir, x.header, name), b = bytes(orig, o.header, name);
      same = a.length >= b.length && a.subarray(0, b.length).equals(b) ? `begins with ORIG's ${b.length} bytes` : 'differs from ORIG';
    }
    lines.push(`${name} ${t.dtype} [${t.shape.join(', ')}] ${same}`);
  }
  lines.push(`parameters ${JSON.stringify(x.parameterCount)}`);
  fs.writeSync(1, lines.join('\n') + '\n');
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'texts') writeTexts(args[0]);
  else if (mode === 'probes') writeProbes(args[0]);
  else if (mode === 'split') split(args[0]);
  else if (mode === 'encode') await encode(args[0], args.slice(1));
  else if (mode === 'roundtrip') await roundtrip(args[0], args.slice(1));
  else if (mode === 'train') train(args[0], args[1]);
  else if (mode === 'train-plain') trainPlain(args[0], args[1]);
  else if (mode === 'encode-added') await encodeAdded(args[0], args.slice(1));
  else if (mode === 'safetensors') await safetensors(args[0], args[1]);
  else {
    console.error('usage: node oracle.js texts|probes|split|encode|roundtrip|train|train-plain|encode-added|safetensors ...');
    process.exit(2);
  }
}

main().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
