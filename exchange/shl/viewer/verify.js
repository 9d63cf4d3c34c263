// Offline verification of a medledger receipt, in the browser, with WebCrypto only.
//
// The same checks as ledger/verify.py, for the same formats (docs/ledger-format.md): a C2SP
// signed note (the checkpoint) opened with the log keys this page was built with, optionally a
// witness quorum (C2SP tlog-policy, cosignature/v1), the RFC 6962 inclusion proof of the entry
// (C2SP tlog-proof), the entry in its canonical form, and its commitment
// SHA-256(salt || bytes) to the exact bytes shown. Nothing the server says is trusted: the
// receipt, the salt and the document all come from it, and each is checked against the keys.
//
// Every failure throws a VerifyError naming the check, so the page can say which one failed.
"use strict";

const Verify = (() => {
  const utf8 = new TextEncoder();
  const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
  const HASH_SIZE = 32;
  const MAX_RECEIPT_BYTES = 1 << 20; // ledger/receipt.py: a receipt is a few KiB
  const MAX_ENTRY_BYTES = 1 << 16; // ledger/entry.py
  const MAX_SIGNATURES = 100; // ledger/note.py
  const ALG_ED25519 = 0x01;
  const ALG_COSIGNATURE_V1 = 0x04;
  const DASH = "\u2014 ";
  const UINT64_LIMIT = 1n << 64n;

  // check: "format" | "signature" | "witnesses" | "inclusion" | "entry" | "content" | "browser"
  class VerifyError extends Error {
    constructor(check, message) {
      super(message);
      this.name = "VerifyError";
      this.check = check;
    }
  }

  // --- bytes -------------------------------------------------------------------------------

  const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

  // Standard base64 with padding (RFC 4648 section 4), as the log writes it. Re-encoding must
  // give the same text, so one text stands for one byte string.
  function b64decode(text, what, size) {
    if (typeof text !== "string" || !B64.test(text)) {
      throw new VerifyError("format", `${what} is not base64`);
    }
    const out = Uint8Array.fromBase64 ? Uint8Array.fromBase64(text) : binary(atob(text));
    if (b64encode(out) !== text) throw new VerifyError("format", `${what} is not canonical base64`);
    if (size !== undefined && out.length !== size) {
      throw new VerifyError("format", `${what} must be ${size} bytes`);
    }
    return out;
  }

  function binary(text) {
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  // Native where the browser has it (see Shl's decoder), else btoa of a binary string.
  function b64encode(bytes) {
    if (bytes.toBase64) return bytes.toBase64();
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin);
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  // A decimal without sign or leading zeros below 2^64 (ledger/untrusted.py read_uint64).
  function readUint64(text, what) {
    if (!/^(0|[1-9][0-9]{0,19})$/.test(text) || BigInt(text) >= UINT64_LIMIT) {
      throw new VerifyError("format", `${what} is not a decimal below 2^64`);
    }
    return BigInt(text);
  }

  // --- keys --------------------------------------------------------------------------------

  function validKeyName(name) {
    return name.length > 0 && !name.includes("+") && !/\s/u.test(name);
  }

  // SHA-256(name || "\n" || type || public key)[:4], C2SP signed-note.
  async function keyId(name, type, publicKey) {
    const digest = await sha256(concat(utf8.encode(name + "\n"), Uint8Array.of(type), publicKey));
    return digest.subarray(0, 4);
  }

  // A vkey `<name>+<hex key id>+<base64(type || public key)>`; the key id must match the name
  // and the key (signed-note "Verifier keys"), and the type must be the one expected.
  async function parseVkey(vkey, type) {
    const text = vkey.trim();
    const a = text.indexOf("+");
    const b = a < 0 ? -1 : text.indexOf("+", a + 1);
    if (b < 0) throw new VerifyError("format", `key ${text} must read <name>+<hex id>+<base64 key>`);
    const name = text.slice(0, a);
    const idHex = text.slice(a + 1, b);
    if (!validKeyName(name)) throw new VerifyError("format", `invalid key name ${name}`);
    if (!/^[0-9a-fA-F]{8}$/.test(idHex)) {
      throw new VerifyError("format", `key id of ${name} must be 8 hex digits`);
    }
    const raw = b64decode(text.slice(b + 1), `key of ${name}`);
    if (raw.length < 1 || raw[0] !== type) {
      const kind = type === ALG_ED25519 ? "an Ed25519 log key" : "an Ed25519 cosigner key";
      throw new VerifyError("format", `key of ${name} is not ${kind}`);
    }
    if (raw.length !== 33) throw new VerifyError("format", `key of ${name} is not 32 bytes`);
    const publicKey = raw.subarray(1);
    const id = await keyId(name, type, publicKey);
    if (hex(id) !== idHex.toLowerCase()) {
      throw new VerifyError("format", `key id of ${name} does not match its key`);
    }
    return { name, id: hex(id), publicKey, vkey: text, type };
  }

  // Ed25519 in WebCrypto is recent (Chrome 137, Firefox 129, Safari 17): say so plainly
  // rather than report a tampered summary when the browser simply cannot check.
  async function importEd25519(publicKey) {
    try {
      return await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      if (e && e.name === "NotSupportedError") {
        throw new VerifyError("browser", "this browser cannot check Ed25519 signatures");
      }
      throw new VerifyError("format", `unusable Ed25519 key: ${e}`);
    }
  }

  async function ed25519Verify(key, signature, message) {
    if (!key.cryptoKey) key.cryptoKey = await importEd25519(key.publicKey);
    return crypto.subtle.verify({ name: "Ed25519" }, key.cryptoKey, signature, message);
  }

  // --- signed note and checkpoint ----------------------------------------------------------

  function checkNoteText(text) {
    if (!text.endsWith("\n")) throw new VerifyError("format", "note text must end in a newline");
    if (text.includes("\n\n")) throw new VerifyError("format", "note text holds a blank line");
    if (/[\u0000-\u0009\u000b-\u001f]/.test(text)) {
      throw new VerifyError("format", "note text holds a control character");
    }
  }

  // The text and the parsed signature lines of a signed note; nothing verified yet.
  function splitNote(note) {
    if (!note.endsWith("\n")) throw new VerifyError("format", "signed note must end in a newline");
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0) throw new VerifyError("format", "signed note has no blank line");
    const text = note.slice(0, cut + 1);
    checkNoteText(text);
    const lines = note.slice(cut + 2, -1).split("\n");
    if (lines.length > MAX_SIGNATURES) throw new VerifyError("format", "too many signatures");
    const signatures = lines.map((line) => {
      const space = line.indexOf(" ", DASH.length);
      const name = line.slice(DASH.length, space);
      if (!line.startsWith(DASH) || space < 0 || !validKeyName(name)) {
        throw new VerifyError("format", `malformed signature line ${JSON.stringify(line)}`);
      }
      const raw = b64decode(line.slice(space + 1), `signature by ${name}`);
      if (raw.length < 5) throw new VerifyError("format", `signature by ${name} is too short`);
      return { name, id: hex(raw.subarray(0, 4)), signature: raw.subarray(4) };
    });
    return { text, signatures };
  }

  // C2SP tlog-checkpoint body: origin, size, base64 root, optional extension lines.
  function parseCheckpoint(text) {
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) throw new VerifyError("format", "checkpoint needs origin, size and root");
    const [origin, size, root, ...extensions] = lines;
    if (!origin) throw new VerifyError("format", "checkpoint origin is empty");
    if (extensions.some((l) => !l)) throw new VerifyError("format", "empty checkpoint extension");
    return {
      origin,
      size: readUint64(size, "checkpoint size"),
      root: b64decode(root, "checkpoint root", HASH_SIZE),
    };
  }

  // Opens a signed note with trusted Ed25519 keys (signed-note "Signatures"): signatures by
  // unknown keys are ignored, one by a known key that fails rejects the note, and at least one
  // known key must have signed.
  async function openNote(note, keys) {
    const { text, signatures } = splitNote(note);
    const message = utf8.encode(text);
    const signers = [];
    for (const sig of signatures) {
      const key = keys.find((k) => k.name === sig.name && k.id === sig.id);
      if (!key) continue;
      if (sig.signature.length !== 64 || !(await ed25519Verify(key, sig.signature, message))) {
        throw new VerifyError("signature", `the signature by ${key.name} does not verify`);
      }
      signers.push(key);
    }
    if (!signers.length) {
      const by = signatures.map((s) => `${s.name}+${s.id}`).join(", ");
      throw new VerifyError("signature", `not signed by a key this page trusts (signed by ${by})`);
    }
    return { text, signatures, signers };
  }

  // A checkpoint opened with the log keys; its origin must be the name of the key that signed
  // it (tlog-checkpoint: the key name is the origin). Then the witness quorum, with a policy.
  async function openCheckpoint(note, logKeys, policy) {
    const { text, signatures, signers } = await openNote(note, logKeys);
    const checkpoint = parseCheckpoint(text);
    if (signers.some((k) => k.name !== checkpoint.origin)) {
      throw new VerifyError("signature", `checkpoint of log ${checkpoint.origin} signed by ${signers[0].name}`);
    }
    const witnesses = policy ? await checkQuorum(policy, text, signatures) : null;
    return { checkpoint, signers, witnesses };
  }

  // --- witnesses: C2SP tlog-policy and cosignature/v1 ---------------------------------------

  // Parses a tlog-policy file. Names are opaque; a group lists earlier names once each;
  // exactly one quorum line. Only Ed25519 cosignatures (type 0x04) are supported here.
  async function parsePolicy(text) {
    if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(text)) {
      throw new VerifyError("format", "witness policy holds a control character");
    }
    const logs = [];
    const witnesses = new Map();
    const groups = new Map();
    let quorum = null;
    const defined = (n) => n === "none" || witnesses.has(n) || groups.has(n);
    for (const [i, raw] of text.split("\n").entries()) {
      const line = raw.trim();
      if (!line || line.startsWith("#")) continue;
      const f = line.split(/[ \t]+/);
      const where = `witness policy line ${i + 1}`;
      const fail = (why) => {
        throw new VerifyError("format", `${where}: ${why}`);
      };
      if (f[0] === "log" && (f.length === 2 || f.length === 3)) {
        logs.push(await parseVkey(f[1], ALG_ED25519));
      } else if (f[0] === "witness" && (f.length === 3 || f.length === 4)) {
        if (defined(f[1])) fail(`${f[1]} is defined twice`);
        const key = await parseVkey(f[2], ALG_COSIGNATURE_V1).catch((e) =>
          fail(`${e.message} (only Ed25519 cosignatures, type 0x04, are supported)`),
        );
        for (const w of witnesses.values()) {
          if (equal(w.publicKey, key.publicKey)) fail("the same witness key is listed twice");
        }
        witnesses.set(f[1], key);
      } else if (f[0] === "group" && f.length >= 4) {
        const [, name, threshold, ...members] = f;
        if (defined(name)) fail(`${name} is defined twice`);
        if (new Set(members).size !== members.length) fail("a member is listed twice");
        for (const m of members) if (m === "none" || !defined(m)) fail(`${m} is not defined above`);
        let k;
        if (threshold === "all") k = members.length;
        else if (threshold === "any") k = 1;
        else if (/^[1-9][0-9]*$/.test(threshold)) k = Number(threshold);
        else fail(`threshold ${threshold} is not all, any or a number`);
        if (k < 1 || k > members.length) fail(`threshold ${k} is not between 1 and ${members.length}`);
        groups.set(name, { k, members });
      } else if (f[0] === "quorum" && f.length === 2) {
        if (quorum !== null) fail("a second quorum line");
        if (!defined(f[1])) fail(`${f[1]} is not defined above`);
        quorum = f[1];
      } else {
        fail(`cannot read ${JSON.stringify(line)}`);
      }
    }
    if (quorum === null) throw new VerifyError("format", "witness policy has no quorum line");
    return { logs, witnesses, groups, quorum };
  }

  // Verifies every cosignature by a witness of the policy and evaluates the quorum. A failing
  // cosignature by a known witness rejects the checkpoint, as for the log's own signature.
  async function checkQuorum(policy, text, signatures) {
    const cosigned = new Set();
    for (const sig of signatures) {
      for (const [name, key] of policy.witnesses) {
        if (key.name !== sig.name || key.id !== sig.id) continue;
        // timestamped_signature: u64 big-endian timestamp, then a 64-byte Ed25519 signature.
        const ok = sig.signature.length === 72 && (await verifyCosignature(key, sig.signature, text));
        if (!ok) throw new VerifyError("witnesses", `the cosignature by witness ${name} does not verify`);
        cosigned.add(name);
      }
    }
    const holds = (name) => {
      if (name === "none") return true;
      const group = policy.groups.get(name);
      if (!group) return cosigned.has(name);
      return group.members.filter(holds).length >= group.k;
    };
    if (!holds(policy.quorum)) {
      const got = cosigned.size ? [...cosigned].join(", ") : "none";
      throw new VerifyError("witnesses", `the witness quorum ${policy.quorum} is not met (cosigned by: ${got})`);
    }
    return [...cosigned];
  }

  async function verifyCosignature(key, raw, text) {
    const view = new DataView(raw.buffer, raw.byteOffset, 8);
    const time = view.getBigUint64(0);
    if (time >= 1n << 63n) return false;
    const message = utf8.encode(`cosignature/v1\ntime ${time}\n${text}`);
    return ed25519Verify(key, raw.subarray(8), message);
  }

  // --- receipt, tree and entry -------------------------------------------------------------

  // C2SP tlog-proof@v1: header, optional extra (the entry), index, audit path, blank line,
  // the signed checkpoint verbatim.
  function parseReceipt(text) {
    if (text.length > MAX_RECEIPT_BYTES) throw new VerifyError("format", "receipt is too large");
    const cut = text.indexOf("\n\n");
    if (cut < 0 || cut + 2 >= text.length) {
      throw new VerifyError("format", "receipt has no checkpoint after a blank line");
    }
    const lines = text.slice(0, cut).split("\n");
    if (lines[0] !== "c2sp.org/tlog-proof@v1") {
      throw new VerifyError("format", "receipt does not start with c2sp.org/tlog-proof@v1");
    }
    let at = 1;
    let extra = null;
    if (at < lines.length && lines[at].startsWith("extra ")) extra = b64decode(lines[at++].slice(6), "extra");
    if (at >= lines.length || !lines[at].startsWith("index ")) {
      throw new VerifyError("format", "receipt has no index line");
    }
    const index = readUint64(lines[at++].slice(6), "receipt index");
    const proof = lines.slice(at).map((l) => b64decode(l, "proof hash", HASH_SIZE));
    return { extra, index, proof, checkpoint: text.slice(cut + 2) };
  }

  async function leafHash(data) {
    return sha256(concat(Uint8Array.of(0), data));
  }

  async function nodeHash(left, right) {
    return sha256(concat(Uint8Array.of(1), left, right));
  }

  // RFC 9162 section 2.1.3.2, in BigInt: sizes are uint64 and JavaScript's bit operators
  // work on 32 bits.
  async function rootFromInclusionProof(index, size, leaf, proof) {
    if (!(index < size)) throw new VerifyError("inclusion", `index ${index} is not below the tree size ${size}`);
    let fn = index;
    let sn = size - 1n;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0n) throw new VerifyError("inclusion", "the inclusion proof is too long");
      if (fn & 1n || fn === sn) {
        r = await nodeHash(p, r);
        if (!(fn & 1n)) {
          while (fn !== 0n && !(fn & 1n)) {
            fn >>= 1n;
            sn >>= 1n;
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new VerifyError("inclusion", "the inclusion proof is too short");
    return r;
  }

  async function verifyInclusion(index, size, leaf, proof, root) {
    // Two empty hashes are equal too: only hashes of the right length can prove anything.
    if ([leaf, root, ...proof].some((x) => x.length !== HASH_SIZE)) {
      throw new VerifyError("inclusion", "a hash of the inclusion proof has the wrong length");
    }
    const got = await rootFromInclusionProof(index, size, leaf, proof);
    if (!equal(got, root)) {
      throw new VerifyError("inclusion", `the entry is not in the signed tree of size ${size}`);
    }
  }

  const ENTRY_FIELDS = ["commit", "index", "kind", "media", "prev", "sender", "time", "v"];
  const PATTERNS = {
    time: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/,
    kind: /^[a-z][a-z0-9-]{0,31}$/,
    sender: /^[A-Za-z0-9\-.]{1,64}$/,
    media: /^[a-z]+\/[a-z0-9.+\-]{1,64}$/,
  };

  // A version-1 entry, accepted only when its bytes are exactly the canonical form rebuilt
  // from its fields (ledger/entry.py to_bytes): duplicate keys, floats, escapes, extra fields
  // or a lossy integer all change the bytes.
  function parseEntry(bytes) {
    if (bytes.length > MAX_ENTRY_BYTES) throw new VerifyError("entry", "the entry is too large");
    let obj;
    try {
      obj = JSON.parse(strictUtf8.decode(bytes));
    } catch (e) {
      throw new VerifyError("entry", "the entry is not JSON");
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new VerifyError("entry", "the entry is not a JSON object");
    }
    const keys = Object.keys(obj).filter((k) => k !== "subject").sort();
    if (keys.join() !== ENTRY_FIELDS.join()) {
      throw new VerifyError("entry", "the entry's fields are not the version-1 set");
    }
    if (obj.v !== 1) throw new VerifyError("entry", `unknown entry version ${obj.v}`);
    if (!Number.isSafeInteger(obj.index) || obj.index < 0) {
      throw new VerifyError("entry", "the entry index is not an integer in [0, 2^53)");
    }
    for (const [name, re] of Object.entries(PATTERNS)) {
      if (typeof obj[name] !== "string" || !re.test(obj[name])) {
        throw new VerifyError("entry", `the entry's ${name} is malformed`);
      }
    }
    const b64field = (name) => {
      try {
        return b64decode(obj[name], name, HASH_SIZE);
      } catch (e) {
        throw new VerifyError("entry", `the entry's ${name} is not a 32-byte hash`);
      }
    };
    const commit = b64field("commit");
    if ((obj.index === 0) !== (obj.prev === "")) {
      throw new VerifyError("entry", "prev must be empty at index 0 and a hash after");
    }
    if (obj.prev !== "") b64field("prev");
    if ("subject" in obj) b64field("subject");
    const subject = "subject" in obj ? `,"subject":"${obj.subject}"` : "";
    const canonical =
      `{"commit":"${obj.commit}","index":${obj.index},"kind":"${obj.kind}",` +
      `"media":"${obj.media}","prev":"${obj.prev}","sender":"${obj.sender}"` +
      `${subject},"time":"${obj.time}","v":1}`;
    if (!equal(utf8.encode(canonical), bytes)) {
      throw new VerifyError("entry", "the entry is not in canonical form");
    }
    return { index: obj.index, time: obj.time, kind: obj.kind, sender: obj.sender, media: obj.media, commit };
  }

  // --- the whole receipt -------------------------------------------------------------------

  // Checks a receipt for `data` (the exact bytes shown) under `salt`, in the order of
  // ledger/verify.py: checkpoint signature (and witnesses), entry, inclusion, commitment.
  // Returns what the verdict names; throws VerifyError.
  async function verifyDocument({ receipt, salt, data, media }, trust) {
    const r = parseReceipt(receipt);
    if (r.extra === null) throw new VerifyError("format", "the receipt carries no entry");
    const opened = await openCheckpoint(r.checkpoint, trust.logKeys, trust.policy);
    const entry = parseEntry(r.extra);
    if (BigInt(entry.index) !== r.index) {
      throw new VerifyError("entry", `the receipt says entry ${r.index}, its entry says ${entry.index}`);
    }
    const leaf = await leafHash(r.extra);
    await verifyInclusion(r.index, opened.checkpoint.size, leaf, r.proof, opened.checkpoint.root);
    if (salt.length !== 32) throw new VerifyError("format", "the salt must be 32 bytes");
    if (!equal(await sha256(concat(salt, data)), entry.commit)) {
      throw new VerifyError("content", "SHA-256(salt || document) is not the entry's commitment");
    }
    if (media !== undefined && entry.media !== media) {
      throw new VerifyError("content", `the entry records ${entry.media}, not ${media}`);
    }
    return {
      origin: opened.checkpoint.origin,
      size: opened.checkpoint.size,
      index: entry.index,
      time: entry.time,
      sender: entry.sender,
      kind: entry.kind,
      keys: opened.signers.map((k) => `${k.name}+${k.id}`),
      witnesses: opened.witnesses,
    };
  }

  // The trust this page was built with: log vkeys, and a witness policy (whose log lines add
  // log keys) when there is one.
  async function loadTrust(config) {
    const logKeys = [];
    for (const v of config.logKeys || []) logKeys.push(await parseVkey(v, ALG_ED25519));
    const policy = config.policy ? await parsePolicy(config.policy) : null;
    if (policy) logKeys.push(...policy.logs);
    if (!logKeys.length) throw new VerifyError("format", "this page was built without a log key");
    return { logKeys, policy };
  }

  return {
    VerifyError,
    b64decode,
    b64encode,
    hex,
    sha256,
    parseVkey,
    splitNote,
    openNote,
    openCheckpoint,
    parsePolicy,
    parseReceipt,
    parseEntry,
    leafHash,
    rootFromInclusionProof,
    verifyInclusion,
    verifyDocument,
    loadTrust,
  };
})();
