// The page: read the link from the fragment, ask for what the link needs (recipient,
// passcode), fetch and decrypt the files, verify the summary against the keys this page was
// built with, and show it. The verdict is <output id="verification" data-status="...">.
//
// Timings are left as performance measures (medledger:decrypt, medledger:verify,
// medledger:render) for benchmarks/bench_viewer.py.
"use strict";

(() => {
  const { h, label } = Ips;
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("viewer-config").textContent);
  let current = null; // { link, documents, results }

  // --- messages ----------------------------------------------------------------------------

  function say(en, zh, kind = "info") {
    const status = $("status");
    status.dataset.kind = kind;
    status.replaceChildren(h("span", null, en), " ", h("span", { lang: "zh-CN", class: "zh" }, zh));
  }

  function clearStatus() {
    $("status").replaceChildren();
  }

  function shlMessage(e) {
    switch (e.kind) {
      case "expired":
        return ["This link has expired.", "此链接已过期。"];
      case "inactive":
        return [
          "This link is no longer active (it expired, was revoked, or too many wrong passcodes were tried). Ask the patient for a new link.",
          "此链接已失效（已过期、已撤销或密码错误次数过多）。请向患者索取新链接。",
        ];
      case "version":
        return [`This link needs a newer viewer: ${e.message}.`, "此链接需要更新版本的查看器。"];
      case "network":
        return [`The server could not be reached: ${e.message}.`, "无法连接服务器。"];
      default:
        return [`This link cannot be opened: ${e.message}.`, "无法打开此链接。"];
    }
  }

  // --- the verdict -------------------------------------------------------------------------

  const FAILED = {
    content: [
      "Failed: this summary does not match what the hospital recorded — do not rely on it.",
      "验证失败：本摘要与医院记录的内容不一致——请勿依赖。",
    ],
    signature: [
      "Failed: the proof with this summary is not signed by the ledger this page trusts — do not rely on it.",
      "验证失败：随附的证明并非由本页信任的账本签署——请勿依赖。",
    ],
    witnesses: [
      "Failed: the ledger's record is not confirmed by enough independent witnesses — do not rely on it.",
      "验证失败：账本记录未获得足够的独立见证方确认——请勿依赖。",
    ],
    proof: [
      "Failed: no proof of recording came with this summary — do not rely on it.",
      "验证失败：本摘要没有附带记录证明——请勿依赖。",
    ],
    decrypt: [
      "Failed: a file of this link was altered or damaged on the way — do not rely on it.",
      "验证失败：此链接的文件在传输中被篡改或损坏——请勿依赖。",
    ],
    browser: [
      "Failed: this browser cannot check the ledger's signatures (Ed25519). Open the link in a current Chrome, Edge, Firefox or Safari.",
      "验证失败：此浏览器无法校验账本签名（Ed25519），请使用最新版浏览器打开。",
    ],
    unreadable: [
      "Failed: a file of this link cannot be read as FHIR — do not rely on it.",
      "验证失败：此链接的文件无法作为 FHIR 读取——请勿依赖。",
    ],
    invalid: [
      "Failed: the proof with this summary is not valid — do not rely on it.",
      "验证失败：随附的证明无效——请勿依赖。",
    ],
  };

  const CHECK_NAMES = {
    format: ["proof format", "证明格式"],
    signature: ["ledger signature", "账本签名"],
    witnesses: ["witness cosignatures", "见证方联署"],
    entry: ["ledger entry", "账本条目"],
    inclusion: ["inclusion in the ledger", "包含证明"],
    content: ["summary content", "摘要内容"],
    proof: ["proof present", "证明"],
    decrypt: ["decryption", "解密"],
    unreadable: ["file format", "文件格式"],
    browser: ["browser support", "浏览器支持"],
  };

  // "2026-11-28T09:30:00.123Z" -> "2026-11-28 09:30 UTC": the same for every reader.
  const when = (t) => `${t.slice(0, 10)} ${t.slice(11, 16)} UTC`;

  function showVerdict(results) {
    const out = $("verification");
    const failure = results.find((r) => !r.ok);
    const list = $("checks-list");
    if (failure) {
      const [en, zh] = FAILED[failure.check] || FAILED.invalid;
      const [cen, czh] = CHECK_NAMES[failure.check] || CHECK_NAMES.format;
      out.dataset.status = "failed";
      out.replaceChildren(
        h("strong", null, en), " ", h("span", { lang: "zh-CN", class: "zh" }, zh),
        h("span", { class: "detail" }, label("Check that failed:", "未通过的检查："), ` ${cen} / ${czh} — ${failure.message}`),
      );
      list.replaceChildren(h("li", { class: "bad" }, `✗ ${cen}: ${failure.message}`));
    } else {
      const r = results[0].proof;
      const also = results.length > 1 ? ` (and ${results.length - 1} more summaries)` : "";
      const witnessed = r.witnesses && r.witnesses.length
        ? [` Confirmed by ${r.witnesses.length} independent witness(es).`, `已获 ${r.witnesses.length} 个独立见证方确认。`]
        : ["", ""];
      out.dataset.status = "verified";
      out.replaceChildren(
        h("strong", null, `Verified: this summary is exactly what ${r.sender} recorded in the ledger ${r.origin} on ${when(r.time)}, entry ${r.index}.${also}${witnessed[0]}`),
        " ",
        h("span", { lang: "zh-CN", class: "zh" }, `已验证：本摘要与 ${r.sender} 于 ${when(r.time)} 在账本 ${r.origin} 中记录的内容完全一致（第 ${r.index} 条）。${witnessed[1]}`),
      );
      list.replaceChildren(
        h("li", null, `✓ Signed by the ledger key ${r.keys.join(", ")}`),
        h("li", null, r.witnesses ? `✓ Witness quorum met: ${r.witnesses.join(", ") || "none required"}` : "– No witness policy in this page"),
        h("li", null, `✓ Entry ${r.index} is in the signed tree of ${r.size} entries`),
        h("li", null, "✓ SHA-256(salt ‖ summary) equals the recorded commitment"),
      );
    }
    $("checks").hidden = false;
  }

  // --- reading the link ----------------------------------------------------------------------

  function showLink(link) {
    const bits = [];
    if (link.label) bits.push(h("p", { class: "label" }, link.label));
    if (link.exp) {
      bits.push(h("p", null, label("Expires:", "有效期至："), ` ${link.exp.toISOString().slice(0, 16).replace("T", " ")} UTC`));
    }
    if (link.flags.L) bits.push(h("p", null, label("Long-term link: the summary may be updated.", "长期链接：摘要可能会更新。")));
    $("link").replaceChildren(...bits);
    $("link").hidden = !bits.length;
  }

  function askToOpen(link, recipient, message) {
    const form = $("open-form");
    $("recipient").value = recipient || $("recipient").value;
    $("passcode-row").hidden = !link.flags.P;
    $("passcode").required = link.flags.P;
    $("passcode").value = "";
    form.hidden = false;
    if (message) say(message[0], message[1], "warning");
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const who = $("recipient").value.trim();
      if (!who) return;
      openLink(link, who, $("passcode").value);
    };
    (link.flags.P && recipient ? $("passcode") : $("recipient")).focus();
  }

  async function start(text) {
    let link;
    try {
      link = Shl.parseLink(text);
    } catch (e) {
      say(...shlMessage(e), "error");
      return;
    }
    $("paste-form").hidden = true;
    showLink(link);
    if (link.exp && link.exp.getTime() < Date.now()) {
      say(...shlMessage({ kind: "expired" }), "error");
      $("link").classList.add("expired");
      return;
    }
    const recipient = new URLSearchParams(location.search).get("recipient");
    if (recipient && recipient.trim() && !link.flags.P) openLink(link, recipient.trim());
    else askToOpen(link, recipient);
  }

  // --- fetching, decrypting, verifying -------------------------------------------------------

  async function openLink(link, recipient, passcode) {
    $("open-form").hidden = true;
    say("Fetching the summary…", "正在获取摘要……");
    let files;
    try {
      files = link.flags.U
        ? await Shl.fetchDirect(link, recipient)
        : await Shl.manifestFiles(await Shl.fetchManifest(link, recipient, passcode));
    } catch (e) {
      if (e.kind === "passcode") {
        const left = e.remainingAttempts;
        if (left === 0) {
          say(...shlMessage({ kind: "inactive" }), "error");
          return;
        }
        const en = `Wrong passcode.${left === null ? "" : ` ${left} attempt${left === 1 ? "" : "s"} remaining.`}`;
        const zh = `密码错误。${left === null ? "" : `还可尝试 ${left} 次。`}`;
        askToOpen(link, recipient, [en, zh]);
        return;
      }
      say(...shlMessage(e), "error");
      return;
    }

    say("Decrypting and verifying in this browser…", "正在本浏览器中解密并验证……");
    performance.mark("medledger:decrypt-start");
    let collected;
    try {
      const plain = [];
      for (const f of files) {
        const { header, bytes } = await Shl.decryptJwe(f.jwe, link.key);
        // The JWE's cty is authenticated; the manifest's contentType is not.
        plain.push({ contentType: header.cty || f.contentType, bytes });
      }
      collected = Ips.collect(plain);
    } catch (e) {
      // A file that fails AES-GCM was changed after encryption; one that decrypts but is not
      // readable FHIR was sent that way.
      const check = e instanceof Ips.FileError ? "unreadable" : "decrypt";
      showVerdict([{ ok: false, check, message: e.message }]);
      clearStatus();
      return;
    }
    performance.mark("medledger:decrypt-end");
    performance.measure("medledger:decrypt", "medledger:decrypt-start", "medledger:decrypt-end");

    if (!collected.documents.length) {
      say("This link holds no patient summary.", "此链接不包含患者摘要。", "error");
      return;
    }
    performance.mark("medledger:verify-start");
    const results = await verifyAll(collected);
    performance.mark("medledger:verify-end");
    performance.measure("medledger:verify", "medledger:verify-start", "medledger:verify-end");

    current = { link, documents: collected.documents, results };
    showVerdict(results);
    performance.mark("medledger:render-start");
    try {
      draw();
    } catch (e) {
      // The verdict stands; a summary that cannot be drawn is said so, not half shown.
      $("summary").replaceChildren();
      say(`The summary could not be displayed: ${e.message}.`, "无法显示摘要。", "error");
      return;
    }
    performance.mark("medledger:render-end");
    performance.measure("medledger:render", "medledger:render-start", "medledger:render-end");
    clearStatus();
  }

  // Each summary against each Provenance that names it; one that verifies is enough (a
  // Provenance proves only the exact bytes it commits to, whoever added it).
  async function verifyAll({ documents, provenances }) {
    let trust;
    try {
      trust = await Verify.loadTrust(config);
    } catch (e) {
      return [{ ok: false, check: e.check || "format", message: `this page's keys or witness policy: ${e.message}` }];
    }
    const results = [];
    for (const doc of documents) {
      const candidates = Ips.provenancesFor(doc, provenances);
      let result = { ok: false, check: "proof", message: "no Provenance names this summary as its target" };
      for (const p of candidates) {
        try {
          const { receipt, salt } = Ips.proofOf(p);
          const proof = await Verify.verifyDocument({ receipt, salt, data: doc.bytes, media: "application/fhir+json" }, trust);
          result = { ok: true, proof };
          break;
        } catch (e) {
          if (!(e instanceof Verify.VerifyError)) throw e;
          result = { ok: false, check: e.check, message: e.message };
        }
      }
      results.push(result);
    }
    return results;
  }

  // --- display -------------------------------------------------------------------------------

  // The languages adapters/narrative.py writes, named in themselves.
  const LANGUAGES = { en: "English", zh: "中文", ko: "한국어", ru: "Русский", ar: "العربية", th: "ไทย" };

  function draw() {
    const langs = [];
    for (const d of current.documents) for (const l of Ips.languages(d.bundle)) if (!langs.includes(l)) langs.push(l);
    const select = $("language");
    const chosen = select.value && langs.includes(select.value) ? select.value : langs.includes("en") ? "en" : langs[0];
    select.replaceChildren(...langs.map((l) => h("option", { value: l }, `${LANGUAGES[l.split("-")[0]] || l} (${l})`)));
    if (chosen) select.value = chosen;
    $("language-row").hidden = !langs.length;
    $("toolbar").hidden = false;
    const summary = $("summary");
    summary.classList.toggle("unverified", current.results.some((r) => !r.ok));
    summary.replaceChildren(...current.documents.map((d) => Ips.render(d, chosen)));
  }

  // --- start ---------------------------------------------------------------------------------

  $("language").addEventListener("change", () => current && draw());
  $("print").addEventListener("click", () => window.print());
  // A printed summary carries what was checked, which a closed <details> would not print.
  window.addEventListener("beforeprint", () => {
    $("checks").open = true;
  });
  $("trusted-keys").textContent = (config.logKeys || []).map((v) => v.split("+").slice(0, 2).join("+")).join(", ");

  if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
    say(
      "This page must be opened over HTTPS: browsers decrypt and verify only on secure pages.",
      "请通过 HTTPS 打开此页面：浏览器只在安全页面中解密和验证。",
      "error",
    );
    return;
  }
  // A new link typed over this one changes only the fragment: start again from it.
  window.addEventListener("hashchange", () => location.reload());
  const fragment = location.hash.slice(1);
  if (fragment.includes("shlink:/")) {
    start(fragment);
  } else {
    const form = $("paste-form");
    form.hidden = false;
    form.onsubmit = (ev) => {
      ev.preventDefault();
      start($("link-text").value.trim());
    };
  }
})();
