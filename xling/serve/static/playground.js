// The xling playground: one client of the server's JSON API (GET /api/info, POST /api/generate, /api/translate,
// /api/search). No framework, no build step, nothing loaded from elsewhere. The forms do no checking of their own
// (novalidate): the server checks every field and its one-line answer is shown, e.g. a max tokens beyond the
// model's context is clamped by the server and the note says so.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let generation = null;  // the AbortController of the generation in progress

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function show(node, text, isError = false) {
  node.hidden = !text;
  node.textContent = text || "";
  node.classList.toggle("error", isError);
}

async function postJSON(path, body, signal) {
  const res = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify(body), signal});
  const data = await res.json().catch(() => ({error: `${path} answered ${res.status} without JSON`}));
  if (!res.ok) throw new Error(data.error || `${path} answered ${res.status}`);
  return data;
}

// ---------------------------------------------------------------- tabs

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(on));
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

// ---------------------------------------------------------------- generate (streamed)

// Server-sent events from a POST response: "event: NAME\ndata: JSON\n\n" blocks, read as they arrive.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buf += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield {name, data: JSON.parse(data)};
    }
  }
}

async function generate(ev) {
  ev.preventDefault();
  if (generation) return;
  const body = {prompt: $("gen-prompt").value, lang: $("gen-lang").value, stream: true,
                temperature: Number($("gen-temperature").value), top_k: Number($("gen-top-k").value),
                max_tokens: Number($("gen-max-tokens").value)};
  $("gen-prompt-echo").textContent = body.prompt;
  $("gen-text").textContent = "";
  show($("gen-notes"), "");
  $("gen-stats").textContent = "decoding…";
  generation = new AbortController();
  $("gen-go").disabled = true;
  $("gen-stop").disabled = false;
  try {
    const res = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify(body), signal: generation.signal});
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new Error(data.error || `/api/generate answered ${res.status}`);
    }
    for await (const {name, data} of sseEvents(res)) {
      if (name === "start") {
        if (data.notes.length) show($("gen-notes"), data.notes.join(" "));
      } else if (name === "token") {
        $("gen-text").textContent += data.text;
        const rate = data.seconds > 0 ? (data.tokens / data.seconds).toFixed(1) : "–";
        $("gen-stats").textContent = `${data.tokens} tokens · ${rate} tokens/s`;
      } else if (name === "done") {
        $("gen-stats").textContent = `${data.tokens} tokens in ${data.seconds.toFixed(2)} s · ` +
          `${data.tokens_per_s ?? "–"} tokens/s · stopped: ${data.stopped}`;
      } else if (name === "error") {
        throw new Error(data.error);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") $("gen-stats").textContent += " · stopped";
    else { show($("gen-notes"), e.message, true); $("gen-stats").textContent = ""; }
  } finally {
    generation = null;
    $("gen-go").disabled = false;
    $("gen-stop").disabled = true;
  }
}

// ---------------------------------------------------------------- translate

async function translate(ev) {
  ev.preventDefault();
  $("tr-output").textContent = "";
  $("tr-stats").textContent = "translating…";
  try {
    const data = await postJSON("/api/translate", {text: $("tr-text").value, src: $("tr-src").value,
                                                   tgt: $("tr-tgt").value, beams: Number($("tr-beams").value)});
    $("tr-output").textContent = data.translation;
    $("tr-stats").textContent = `beam size ${data.beams} · ${data.seconds.toFixed(2)} s · ${data.model}` +
      (data.notes.length ? ` · ${data.notes.join(" ")}` : "");
  } catch (e) {
    $("tr-stats").textContent = "";
    $("tr-output").append(el("p", {class: "note error"}, e.message));
  }
}

// ---------------------------------------------------------------- search

function hitsTable(hits) {
  const rows = hits.map((h) => el("tr", h.match ? {class: "match", title: "the verse the query translates"} : {},
    el("td", {class: "score"}, h.score.toFixed(3)), el("td", {dir: "auto"}, h.text)));
  return el("table", {}, el("tr", {}, el("th", {}, "cosine"), el("th", {}, "verse")), ...rows);
}

async function search(ev) {
  ev.preventDefault();
  const out = $("search-results");
  out.textContent = "";
  show($("search-note"), "");
  $("search-stats").textContent = "searching…";
  const body = {text: $("search-text").value, k: Number($("search-k").value)};
  if ($("search-lang").value) body.lang = $("search-lang").value;
  try {
    const data = await postJSON("/api/search", body);
    $("search-stats").textContent = `query in ${data.lang}${data.detected ? " (detected)" : ""} · ` +
      `layer ${data.layer} · ${data.seconds.toFixed(2)} s` + (data.peer ? " · beside the peer encoder" : "");
    for (const [lang, hits] of Object.entries(data.results)) {
      const block = el("div", {class: "lang-block", "data-lang": lang}, el("h3", {}, lang));
      const peerHits = data.peer && data.peer[lang];
      if (peerHits) {
        block.append(el("div", {class: "side"},
          el("div", {}, el("h4", {}, "xling"), hitsTable(hits)),
          el("div", {}, el("h4", {}, "peer (USE v3)"), hitsTable(peerHits))));
      } else {
        block.append(hitsTable(hits));
      }
      out.append(block);
    }
  } catch (e) {
    $("search-stats").textContent = "";
    show($("search-note"), e.message, true);
  }
}

function exampleVerse() {
  const ex = info.search.examples;
  const langs = Object.keys(ex);
  if (!langs.length) return;
  const lang = langs[Math.floor(Math.random() * langs.length)];
  $("search-text").value = ex[lang][Math.floor(Math.random() * ex[lang].length)];
  $("search-lang").value = lang;
}

// ---------------------------------------------------------------- report

function showReport(report) {
  const links = $("report-links");
  links.textContent = "";
  if (report.html) {
    links.append(el("p", {}, el("a", {href: report.html, target: "_blank"}, "report.html"), " · ",
                    el("a", {href: report.metrics, target: "_blank"}, "metrics.json")));
    $("report-frame").src = report.html;
    $("report-frame").hidden = false;
  } else {
    links.append(el("p", {class: "note"}, report.note));
  }
  if (report.headline) {
    const h = report.headline;
    const fmt = (c) => (typeof c === "number" ? c.toFixed(3) : String(c));
    $("report-headline").append(el("h3", {}, "Headline numbers (test split)"),
      el("table", {}, el("tr", {}, ...h.header.map((c) => el("th", {}, c))),
        ...h.rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, fmt(c)))))));
  }
}

// ---------------------------------------------------------------- start

function fillLanguages(select, langs, chosen) {
  for (const lg of langs) select.append(el("option", {value: lg}, lg));
  if (chosen) select.value = chosen;
}

async function start() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.id.slice(4)));
  }
  $("generate-form").addEventListener("submit", generate);
  $("gen-stop").addEventListener("click", () => generation && generation.abort());
  $("translate-form").addEventListener("submit", translate);
  $("search-form").addEventListener("submit", search);
  $("search-example").addEventListener("click", exampleVerse);
  $("api-link").href = "/api/info";
  const wanted = location.hash.slice(1);
  selectTab(["generate", "translate", "search", "report"].includes(wanted) ? wanted : "generate");

  const res = await fetch("/api/info");
  info = await res.json();
  document.title = `xling playground · ${info.name}`;
  $("run-line").textContent = `${info.run} · step ${info.step ?? "?"} · ${info.languages.length} languages ` +
    `(${info.languages.join(", ")}) · context ${info.context} tokens · ` +
    `${(info.parameters / 1e6).toFixed(1)} M parameters`;
  const langs = info.languages;
  fillLanguages($("gen-lang"), langs, langs[0]);
  fillLanguages($("tr-src"), langs, langs[0]);
  fillLanguages($("tr-tgt"), langs, langs[1]);
  fillLanguages($("search-lang"), info.search.languages);
  $("gen-temperature").value = info.defaults.temperature;
  $("gen-top-k").value = info.defaults.top_k;
  $("gen-max-tokens").value = info.defaults.max_tokens;

  if (!info.translate.available) {
    show($("tr-note"), info.translate.note);
  }
  const s = info.search;
  if (!s.available) {
    show($("search-note"), s.note);
    $("search-go").disabled = true;
  } else {
    const n = Object.values(s.verses).reduce((a, b) => a + b, 0);
    $("search-about").textContent = `The documents: ${n.toLocaleString()} verses of the test chapters ` +
      `(never trained on) in ${s.languages.length} languages, encoded with this model (layer ${s.layer}). ` +
      (s.peer.installed ? `The peer encoder ranks them too, for the languages it knows (${s.peer.languages.join(", ")}).`
                        : s.peer.note);
  }
  showReport(info.report);
}

start().catch((e) => show($("gen-notes"), `the page could not start: ${e.message}`, true));
