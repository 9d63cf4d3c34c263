// The link's files as FHIR: which one is the patient summary (an IPS document Bundle), which
// Provenance carries its receipt, and the summary drawn readably and safely.
//
// Narrative is untrusted markup. It is parsed into an inert document (DOMParser runs no
// script) and copied node by node into the page: only the XHTML elements FHIR narrative
// allows, only harmless attributes, text as text. No id, class, style, href or src is copied,
// so narrative can neither run code, load anything, restyle the page nor shadow its elements.
"use strict";

const Ips = (() => {
  const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
  const XHTML = "http://www.w3.org/1999/xhtml";
  const SALT_EXTENSION = "urn:medledger:extension:salt";
  const DERIVED_EXTENSION = "https://fhir.medledger.example/StructureDefinition/coding-derived";
  const MAX_DEPTH = 32;

  // FHIR R4 narrative (txt-1): the XHTML elements it allows, less img (shown as its alt text).
  const ALLOWED = new Set(
    ("a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em " +
      "h1 h2 h3 h4 h5 h6 hr i li ol p pre q samp small span strong sub sup table tbody td " +
      "tfoot th thead tr tt ul var").split(" "),
  );
  // Dropped with their content: code, embedded documents, forms and media.
  const DROPPED = new Set(
    ("script style iframe frame frameset object embed applet svg math form input button " +
      "textarea select option template link meta base noscript audio video source canvas").split(" "),
  );
  const ATTRIBUTES = new Set(["lang", "dir", "colspan", "rowspan", "title", "scope", "abbr", "span"]);

  const SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.whocc.no/atc": "ATC",
    "https://www.gs1.org/gtin": "GTIN",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "https://fhir.medledger.example/CodeSystem/gbt-14396-2016": "GB/T 14396",
    "https://fhir.medledger.example/CodeSystem/nhsa-icd10-2.0": "NHSA ICD-10",
    "https://fhir.medledger.example/CodeSystem/gbt-15657-2021": "GB/T 15657 TCM",
  };

  class FileError extends Error {}

  // Arrays from untrusted JSON: anything else counts as empty.
  const list = (x) => (Array.isArray(x) ? x : []);

  // --- which file is what ----------------------------------------------------------------

  function parseJson(bytes, what) {
    try {
      return JSON.parse(strictUtf8.decode(bytes));
    } catch (e) {
      throw new FileError(`${what} is not JSON`);
    }
  }

  const isFhirJson = (type) => typeof type === "string" && /^application\/fhir\+json\s*(;|$)/.test(type);

  function isDocument(r) {
    const first = r && r.resourceType === "Bundle" && r.type === "document" && Array.isArray(r.entry) && r.entry[0];
    return Boolean(first && first.resource && first.resource.resourceType === "Composition");
  }

  // Sorts the decrypted files into summaries (with the exact bytes that were decrypted, which
  // are what the receipt commits to) and Provenances. A `collection` Bundle is opened one
  // level: its Binary entries of FHIR JSON carry exact bytes (the way one direct `U` file can
  // hold a summary and its Provenance), its Provenance entries are Provenances.
  function collect(files) {
    const documents = [];
    const provenances = [];
    const others = [];
    for (const file of files) {
      if (!isFhirJson(file.contentType)) {
        others.push(file.contentType || "unknown");
        continue;
      }
      const r = parseJson(file.bytes, "a FHIR file");
      if (isDocument(r)) {
        documents.push(documentOf(r, file.bytes, bundleRefs(r)));
      } else if (r && r.resourceType === "Provenance") {
        provenances.push(r);
      } else if (r && r.resourceType === "Bundle" && r.type === "collection" && Array.isArray(r.entry)) {
        for (const e of r.entry) {
          const res = e && e.resource;
          if (res && res.resourceType === "Provenance") {
            provenances.push(res);
          } else if (res && res.resourceType === "Binary" && isFhirJson(res.contentType)) {
            const bytes = base64Bytes(res.data, "a Binary");
            const inner = parseJson(bytes, "a Binary's content");
            if (!isDocument(inner)) continue;
            const refs = [`Binary/${res.id}`, e.fullUrl].filter(Boolean);
            documents.push(documentOf(inner, bytes, refs));
          }
        }
      } else {
        others.push(r && r.resourceType ? r.resourceType : "FHIR JSON");
      }
    }
    return { documents, provenances, others };
  }

  function documentOf(bundle, bytes, refs) {
    return { bundle, bytes, refs, identifier: bundle.identifier || null };
  }

  function bundleRefs(bundle) {
    const refs = [];
    if (bundle.id) refs.push(`Bundle/${bundle.id}`);
    if (bundle.identifier && bundle.identifier.value) refs.push(bundle.identifier.value);
    return refs;
  }

  function base64Bytes(text, what) {
    try {
      return Verify.b64decode(text, what);
    } catch (e) {
      throw new FileError(`${what} is not base64`);
    }
  }

  // The Provenances whose target names this document, by reference or by identifier.
  function provenancesFor(doc, provenances) {
    return provenances.filter((p) =>
      list(p.target).some(
        (t) =>
          (t && typeof t.reference === "string" && doc.refs.includes(t.reference)) ||
          (t && t.identifier && doc.identifier && t.identifier.value === doc.identifier.value &&
            (t.identifier.system || null) === (doc.identifier.system || null)),
      ),
    );
  }

  // The receipt text (signature[0].data, base64) and the salt (extension) of a Provenance.
  function proofOf(provenance) {
    const sig = list(provenance.signature)[0];
    if (!sig || typeof sig.data !== "string") {
      throw new Verify.VerifyError("format", "the Provenance has no signature data (the receipt)");
    }
    let receipt;
    try {
      receipt = strictUtf8.decode(Verify.b64decode(sig.data, "signature data"));
    } catch (e) {
      throw new Verify.VerifyError("format", "the Provenance's signature data is not a base64 receipt");
    }
    const ext = list(provenance.extension).find((x) => x && x.url === SALT_EXTENSION);
    if (!ext) throw new Verify.VerifyError("format", "the Provenance has no salt extension");
    const salt = Verify.b64decode(ext.valueBase64Binary, "salt", 32);
    return { receipt, salt };
  }

  // --- drawing ---------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
    for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
    return el;
  }

  // Bilingual label: English, then Chinese.
  function label(en, zh) {
    return [en, " ", h("span", { lang: "zh-CN", class: "zh" }, zh)];
  }

  function byFullUrl(bundle) {
    const map = new Map();
    for (const e of list(bundle.entry)) {
      if (e && e.resource) {
        if (e.fullUrl) map.set(e.fullUrl, e.resource);
        if (e.resource.id) map.set(`${e.resource.resourceType}/${e.resource.id}`, e.resource);
      }
    }
    return map;
  }

  const CJK = /[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/;

  // A HumanName as adapters/ips writes it: text, else given family (family first in CJK).
  function nameText(n) {
    if (!n || typeof n !== "object") return "";
    if (typeof n.text === "string" && n.text) return n.text;
    const given = list(n.given).filter((g) => typeof g === "string").join(" ");
    const family = typeof n.family === "string" ? n.family : "";
    return family && CJK.test(family) ? family + given : `${given} ${family}`.trim();
  }

  function patientOf(bundle, refs) {
    const comp = bundle.entry[0].resource;
    const ref = comp.subject && comp.subject.reference;
    const found = ref && refs.get(ref);
    if (found && found.resourceType === "Patient") return found;
    const any = list(bundle.entry).find((e) => e && e.resource && e.resource.resourceType === "Patient");
    return any ? any.resource : null;
  }

  function translations(element) {
    const out = new Map();
    for (const x of list(element && element.extension)) {
      if (!x || x.url !== "http://hl7.org/fhir/StructureDefinition/translation") continue;
      const lang = list(x.extension).find((s) => s && s.url === "lang");
      const content = list(x.extension).find((s) => s && s.url === "content");
      if (lang && content && typeof content.valueString === "string") out.set(lang.valueCode, content.valueString);
    }
    return out;
  }

  // Parses narrative XHTML into an inert document; a div that is not well-formed XML is read
  // as HTML instead (still inert), so a sloppy sender's narrative is shown, not lost.
  function parseNarrative(div) {
    if (typeof div !== "string") return null;
    const parser = new DOMParser();
    const xml = parser.parseFromString(div, "application/xhtml+xml");
    if (!xml.getElementsByTagName("parsererror").length) return xml.documentElement;
    const html = parser.parseFromString(div, "text/html");
    return html.body.firstElementChild || html.body;
  }

  function isTranslationBlock(node) {
    return node.nodeType === Node.ELEMENT_NODE && node.localName === "div" &&
      (node.getAttribute("class") || "").split(/\s+/).includes("translation");
  }

  function langOf(node) {
    return node.getAttribute("lang") || node.getAttributeNS("http://www.w3.org/XML/1998/namespace", "lang") || "";
  }

  // Copies the children of `src` into `dst`, keeping only what ALLOWED and ATTRIBUTES permit.
  function copySafe(src, dst, depth, skip) {
    for (const n of src.childNodes) {
      if (skip && skip(n)) continue;
      if (n.nodeType === Node.TEXT_NODE || n.nodeType === Node.CDATA_SECTION_NODE) {
        dst.append(document.createTextNode(n.data));
        continue;
      }
      if (n.nodeType !== Node.ELEMENT_NODE) continue;
      const tag = n.localName.toLowerCase();
      if ((n.namespaceURI !== XHTML && n.namespaceURI !== null) || DROPPED.has(tag)) continue;
      if (depth > MAX_DEPTH) {
        dst.append(document.createTextNode(n.textContent));
      } else if (tag === "img") {
        const alt = n.getAttribute("alt");
        if (alt) dst.append(document.createTextNode(`[${alt}]`));
      } else if (!ALLOWED.has(tag)) {
        copySafe(n, dst, depth + 1);
      } else {
        const el = document.createElement(tag);
        for (const a of n.attributes) {
          const name = a.localName.toLowerCase();
          if (ATTRIBUTES.has(name)) el.setAttribute(name, a.value);
        }
        copySafe(n, el, depth + 1);
        dst.append(el);
      }
    }
  }

  // The narrative's original block and its translation blocks (adapters/narrative.py: the
  // source language first, then `div class="translation" lang=...`), each made safe.
  function splitNarrative(div) {
    const root = parseNarrative(div);
    if (!root) return null;
    const original = document.createDocumentFragment();
    copySafe(root, original, 0, isTranslationBlock);
    const byLang = new Map();
    for (const child of root.children) {
      if (!isTranslationBlock(child)) continue;
      const frag = document.createDocumentFragment();
      copySafe(child, frag, 1);
      byLang.set(langOf(child), frag);
    }
    return { lang: langOf(root), original, translations: byLang };
  }

  // --- coded entries: the original term beside the international coding added to it ------

  const CONCEPT = {
    Condition: "code",
    AllergyIntolerance: "code",
    Procedure: "code",
    Observation: "code",
    DiagnosticReport: "code",
    Immunization: "vaccineCode",
    Medication: "code",
    MedicationStatement: "medicationCodeableConcept",
    MedicationRequest: "medicationCodeableConcept",
    MedicationDispense: "medicationCodeableConcept",
  };

  function conceptOf(resource, refs) {
    if (!resource) return null;
    const field = CONCEPT[resource.resourceType];
    if (field && resource[field]) return resource[field];
    const med = resource.medicationReference && refs.get(resource.medicationReference.reference);
    if (med && med.code) return med.code;
    const device = resource.device && refs.get(resource.device.reference);
    return device && device.type ? device.type : null;
  }

  const isDerived = (c) => list(c.extension).some((x) => x && x.url === DERIVED_EXTENSION);

  function codingText(c) {
    const system = SYSTEMS[c.system] || c.system || "";
    return `${c.display || ""} (${system} ${c.code || ""})`.trim();
  }

  function equivalence(c) {
    const ext = list(c.extension).find((x) => x && x.url === DERIVED_EXTENSION);
    const eq = ext && list(ext.extension).find((x) => x && x.url === "equivalence");
    return eq ? eq.valueCode : "";
  }

  function codesTable(section, refs) {
    const rows = [];
    for (const entry of list(section.entry)) {
      const concept = conceptOf(refs.get(entry && entry.reference), refs);
      if (!concept) continue;
      const codings = list(concept.coding).filter((c) => c && typeof c === "object");
      const source = codings.filter((c) => !isDerived(c));
      const derived = codings.filter(isDerived);
      const original = concept.text || (source[0] && source[0].display) || "";
      rows.push(
        h("tr", null,
          h("td", null, original),
          h("td", null, source.map(codingText).join("; ")),
          h("td", null, derived.length
            ? derived.map((c) => `${codingText(c)}${equivalence(c) ? ` [${equivalence(c)}]` : ""}`).join("; ")
            : "—")),
      );
    }
    if (!rows.length) return null;
    return h("details", { class: "codes" },
      h("summary", null, label("Coded entries", "编码条目")),
      h("table", null,
        h("thead", null, h("tr", null,
          h("th", { scope: "col" }, label("Original term", "原始术语")),
          h("th", { scope: "col" }, label("Source codes", "源编码")),
          h("th", { scope: "col" }, label("International code (added)", "国际编码（添加）")))),
        h("tbody", null, rows)));
  }

  // --- the document ------------------------------------------------------------------------

  // Every translation language the document carries, in order of first appearance.
  function languages(bundle) {
    const comp = bundle.entry[0].resource;
    const out = [];
    const add = (l) => l && !out.includes(l) && out.push(l);
    for (const l of translations(comp._title).keys()) add(l);
    for (const s of list(comp.section)) {
      const parts = splitNarrative(s.text && s.text.div);
      if (parts) for (const l of parts.translations.keys()) add(l);
    }
    return out;
  }

  function field(en, zh, value) {
    if (!value) return null;
    return [h("dt", null, label(en, zh)), h("dd", null, value)];
  }

  function period(p) {
    if (!p) return "";
    return [p.start, p.end].filter(Boolean).map((t) => t.slice(0, 10)).join(" – ");
  }

  // Draws one summary: the patient, then each section with its original narrative beside the
  // chosen translation, and the coded entries behind a disclosure.
  function render(doc, lang) {
    const bundle = doc.bundle;
    const refs = byFullUrl(bundle);
    const comp = bundle.entry[0].resource;
    const patient = patientOf(bundle, refs);
    const names = patient ? list(patient.name).map(nameText).filter(Boolean) : [];
    const absentBirth = patient && !patient.birthDate && patient._birthDate;
    const custodian = comp.custodian && refs.get(comp.custodian.reference);
    const care = list(comp.event).map((e) => period(e && e.period)).find(Boolean);
    const titles = translations(comp._title);

    const head = h("header", { class: "patient" },
      h("p", { class: "doc-title" }, comp.title || "", titles.get(lang) ? h("span", { class: "tr", lang }, ` · ${titles.get(lang)}`) : null),
      h("h2", { id: "patient-name" }, names.join(" / ") || "—"),
      h("dl", null,
        field("Date of birth", "出生日期", patient ? patient.birthDate || (absentBirth ? "unknown · 未知" : "") : ""),
        field("Sex", "性别", patient && patient.gender),
        field("Summary date", "摘要日期", typeof comp.date === "string" ? comp.date.slice(0, 10) : ""),
        field("Care period", "就诊期间", care),
        field("Hospital", "医院", custodian && custodian.name)));

    const sections = list(comp.section).filter((s) => s && typeof s === "object").map((s, i) => {
      const id = `section-${i}`;
      const parts = splitNarrative(s.text && s.text.div);
      const trTitle = translations(s._title).get(lang);
      const original = h("div", { class: "original", lang: parts && parts.lang ? parts.lang : null },
        h("p", { class: "col-label" }, label("Original", "原文"), parts && parts.lang ? ` (${parts.lang})` : ""),
        parts ? parts.original : "");
      const translated = parts && parts.translations.get(lang);
      const columns = [original];
      if (translated) {
        columns.push(h("div", { class: "translation", lang },
          h("p", { class: "col-label" }, label("Translation", "译文"), ` (${lang})`), translated));
      }
      return h("section", { class: "ips-section", "aria-labelledby": id },
        h("h3", { id }, s.title || "", trTitle ? h("span", { class: "tr", lang }, ` · ${trTitle}`) : null),
        h("div", { class: columns.length > 1 ? "columns" : "columns single" }, columns),
        codesTable(s, refs));
    });
    return h("article", { class: "document" }, head, sections);
  }

  return { FileError, collect, provenancesFor, proofOf, languages, render, label, h };
})();
