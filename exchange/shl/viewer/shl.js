// SMART Health Links (HL7 SHL): the link payload, the manifest request, the files, and their
// JWE decryption, as a receiving application does it. The link's key never leaves the page:
// it arrives in the URL fragment, which browsers do not send to the server.
"use strict";

const Shl = (() => {
  const utf8 = new TextEncoder();
  const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
  // A decompressed file larger than this is refused: a few KiB of DEFLATE can expand to
  // gigabytes, and a summary is at most a few MiB.
  const MAX_INFLATED_BYTES = 64 << 20;

  class ShlError extends Error {
    // kind: "link" | "version" | "expired" | "passcode" | "inactive" | "http" | "file" | "network"
    constructor(kind, message, extra = {}) {
      super(message);
      this.name = "ShlError";
      this.kind = kind;
      Object.assign(this, extra);
    }
  }

  function b64urlDecode(text, what) {
    if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
      throw new ShlError("link", `${what} is not base64url`);
    }
    // The native decoder (Chrome 140, Firefox 133, Safari 18.2) is several times faster
    // than atob and a loop on a megabyte file; both accept exactly what the test above did.
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text, { alphabet: "base64url" });
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // The spec's `exp` is epoch seconds, a number; its own example payload carries a string of
  // epoch milliseconds. exp is only a hint (the server decides), so read both rather than
  // call such a link valid for another fifty thousand years.
  function readExp(value) {
    if (value === undefined || value === null) return null;
    const n = typeof value === "string" && /^[0-9]{1,16}$/.test(value) ? Number(value) : value;
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0) {
      throw new ShlError("link", "the link's expiry (exp) is not a time");
    }
    return new Date(n >= 1e11 ? n : n * 1000);
  }

  // `shlink:/<base64url JSON>`, bare or after a viewer URL ending in `#` (SHL "Construct a
  // SMART Health Link Payload"). Unknown properties and flags are ignored, as the spec says.
  function parseLink(text) {
    const at = typeof text === "string" ? text.indexOf("shlink:/") : -1;
    if (at < 0) throw new ShlError("link", "this is not a SMART Health Link (no shlink:/)");
    let payload;
    try {
      payload = JSON.parse(strictUtf8.decode(b64urlDecode(text.slice(at + 8).trim(), "the link")));
    } catch (e) {
      if (e instanceof ShlError) throw e;
      throw new ShlError("link", "the link's payload is not JSON");
    }
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      throw new ShlError("link", "the link's payload is not a JSON object");
    }
    if (payload.v !== undefined && payload.v !== 1) {
      throw new ShlError("version", `the link is of SHL version ${payload.v}; this viewer reads version 1`);
    }
    let url;
    try {
      url = new URL(payload.url);
    } catch (e) {
      throw new ShlError("link", "the link has no valid url");
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new ShlError("link", "the link's url is not http(s)");
    }
    if (typeof payload.key !== "string" || payload.key.length !== 43) {
      throw new ShlError("link", "the link's key is not 43 base64url characters");
    }
    const key = b64urlDecode(payload.key, "the link's key");
    const flag = typeof payload.flag === "string" ? payload.flag : "";
    if (flag.includes("U") && flag.includes("P")) {
      throw new ShlError("link", "the link combines the flags U and P, which the spec forbids");
    }
    return {
      url: url.href,
      key,
      exp: readExp(payload.exp),
      flags: { L: flag.includes("L"), P: flag.includes("P"), U: flag.includes("U") },
      label: typeof payload.label === "string" ? payload.label.slice(0, 80) : null,
    };
  }

  // --- JWE (RFC 7516 compact, alg dir, enc A256GCM) -----------------------------------------

  async function inflateRaw(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    const reader = stream.getReader();
    const chunks = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > MAX_INFLATED_BYTES) {
        await reader.cancel();
        throw new ShlError("file", "a file decompresses to more than 64 MiB");
      }
      chunks.push(value);
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }

  // Decrypts one file. The AAD is the ASCII of the encoded protected header (RFC 7516 section
  // 5.2 step 14), so the header - `cty` and `zip` included - is authenticated with the content.
  async function decryptJwe(jwe, keyBytes) {
    const parts = typeof jwe === "string" ? jwe.trim().split(".") : [];
    if (parts.length !== 5) throw new ShlError("file", "a file is not a compact JWE");
    const [protectedB64, encryptedKey, ivB64, ciphertextB64, tagB64] = parts;
    let header;
    try {
      header = JSON.parse(strictUtf8.decode(b64urlDecode(protectedB64, "JWE header")));
    } catch (e) {
      throw new ShlError("file", "a file's JWE header is not JSON");
    }
    if (header.alg !== "dir" || header.enc !== "A256GCM") {
      throw new ShlError("file", `a file is encrypted with ${header.alg}/${header.enc}, not dir/A256GCM`);
    }
    if (header.crit !== undefined) throw new ShlError("file", "a file's JWE has critical headers");
    if (header.zip !== undefined && header.zip !== "DEF") {
      throw new ShlError("file", `a file is compressed with ${header.zip}`);
    }
    if (encryptedKey !== "") throw new ShlError("file", "a dir JWE must have an empty key part");
    const iv = b64urlDecode(ivB64, "JWE iv");
    const tag = b64urlDecode(tagB64, "JWE tag");
    if (iv.length !== 12 || tag.length !== 16) throw new ShlError("file", "a file's JWE iv or tag has the wrong size");
    const ciphertext = b64urlDecode(ciphertextB64, "JWE ciphertext");
    const sealed = new Uint8Array(ciphertext.length + 16);
    sealed.set(ciphertext);
    sealed.set(tag, ciphertext.length);
    const key = await crypto.subtle.importKey("raw", keyBytes, { name: "AES-GCM" }, false, ["decrypt"]);
    let plain;
    try {
      plain = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv, additionalData: utf8.encode(protectedB64), tagLength: 128 },
          key,
          sealed,
        ),
      );
    } catch (e) {
      throw new ShlError("file", "a file does not decrypt with the link's key (altered or wrong key)");
    }
    if (header.zip === "DEF") plain = await inflateRaw(plain);
    return { header, bytes: plain };
  }

  // --- requests --------------------------------------------------------------------------

  // No cookies, no cache and no referrer: the server learns only what the spec says it
  // should - the recipient, and the passcode when there is one.
  const FETCH = { credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" };

  async function request(url, init) {
    try {
      return await fetch(url, { ...FETCH, ...init });
    } catch (e) {
      throw new ShlError("network", `the server could not be reached (${e.message})`);
    }
  }

  async function jsonBody(response) {
    try {
      return await response.json();
    } catch (e) {
      return null;
    }
  }

  // SHL "Manifest Request": POST {recipient, passcode?}. 401 carries remainingAttempts, 404
  // means the link is no longer active (expired, revoked, or disabled by wrong passcodes).
  async function fetchManifest(link, recipient, passcode) {
    const body = { recipient };
    if (link.flags.P) body.passcode = passcode;
    const r = await request(link.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (r.status === 401) {
      const answer = await jsonBody(r);
      const left = answer && Number.isInteger(answer.remainingAttempts) ? answer.remainingAttempts : null;
      throw new ShlError("passcode", "the passcode is not correct", { remainingAttempts: left });
    }
    if (r.status === 404) throw new ShlError("inactive", "the link is no longer active");
    if (r.status === 429) {
      throw new ShlError("http", "the server asks to wait before trying again", { retryAfter: r.headers.get("retry-after") });
    }
    if (!r.ok) throw new ShlError("http", `the server answered HTTP ${r.status}`);
    const manifest = await jsonBody(r);
    if (!manifest || !Array.isArray(manifest.files)) {
      throw new ShlError("http", "the server's manifest has no files list");
    }
    return manifest;
  }

  // Each manifest file, embedded or fetched from its (short-lived) location.
  async function manifestFiles(manifest) {
    const out = [];
    for (const f of manifest.files) {
      if (f === null || typeof f !== "object") throw new ShlError("http", "a manifest file is not an object");
      let jwe = f.embedded;
      if (typeof jwe !== "string") {
        if (typeof f.location !== "string") throw new ShlError("http", "a manifest file has neither embedded nor location");
        const r = await request(f.location, { method: "GET" });
        if (r.status === 404) throw new ShlError("inactive", "a file of the link is no longer available");
        if (!r.ok) throw new ShlError("http", `the server answered HTTP ${r.status} for a file`);
        jwe = await r.text();
      }
      out.push({ contentType: f.contentType, jwe });
    }
    return out;
  }

  // SHL "Direct File Request" (flag U): GET url?recipient=..., the one encrypted file.
  async function fetchDirect(link, recipient) {
    const url = new URL(link.url);
    url.searchParams.set("recipient", recipient);
    const r = await request(url.href, { method: "GET" });
    if (r.status === 404) throw new ShlError("inactive", "the link is no longer active");
    if (!r.ok) throw new ShlError("http", `the server answered HTTP ${r.status}`);
    return [{ contentType: null, jwe: await r.text() }];
  }

  return { ShlError, parseLink, decryptJwe, fetchManifest, manifestFiles, fetchDirect, b64urlDecode };
})();
