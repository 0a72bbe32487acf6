// The node dashboard: reads /v1/node, /v1/jobs and /v1/vms, and refreshes on every
// server-sent event from /v1/events. Over TCP the token comes from the URL: /#token=...
"use strict";
(function () {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = hash.get("token") || sessionStorage.getItem("dualstack-token") || "";
  if (token) sessionStorage.setItem("dualstack-token", token);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  let jobs = [];
  let eventCount = 0;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  function cpuList(s) {
    const out = new Set();
    for (const part of String(s || "").split(",")) {
      if (!part.trim()) continue;
      const [a, b] = part.split("-").map(Number);
      for (let c = a; c <= (isNaN(b) ? a : b); c++) out.add(c);
    }
    return out;
  }
  function mib(bytes) { return Math.round(bytes / 1048576) + " MiB"; }
  function secs(s) {
    if (s == null) return "";
    if (s < 60) return s.toFixed(1) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  async function get(path) {
    const r = await fetch(path, { headers });
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.json();
  }
  function fill(id, rows, cols) {
    const tb = document.querySelector("#" + id + " tbody");
    tb.replaceChildren();
    if (!rows.length) {
      tb.append(el("tr", {}, el("td", { class: "empty", colspan: String(cols) }, "none")));
    }
    for (const r of rows) tb.append(r);
  }

  function drawNode(node) {
    const zoneOf = new Map();
    for (const z of node.zones) for (const c of cpuList(z.cpus)) zoneOf.set(c, z.name);
    const commodity = cpuList(node.commodity ? node.commodity.cpus : "");
    const numaDiv = document.getElementById("numa");
    numaDiv.replaceChildren();
    for (const n of node.topology.numa_nodes) {
      const cores = el("div", { class: "cores" });
      for (const core of node.topology.cores.filter((c) => c.numa_node === n.os_index)) {
        const pus = [...cpuList(core.pus)];
        const zone = pus.map((p) => zoneOf.get(p)).find(Boolean);
        const owner = zone ? "zone " + zone : pus.some((p) => commodity.has(p)) ? "commodity" : "free";
        const cls = zone ? "zone" : owner === "commodity" ? "commodity" : "free";
        cores.append(el("div", { class: "core " + cls, "data-core": String(core.id), "data-owner": owner },
          el("span", { class: "owner" }, owner), "core " + core.id + " · CPU " + core.pus));
      }
      numaDiv.append(el("div", { class: "numa" },
        el("h3", {}, "NUMA node " + n.os_index + " · " + mib(n.memory_bytes)), cores));
    }
    const hp = document.getElementById("hugepages");
    hp.replaceChildren();
    for (const n of node.topology.numa_nodes) {
      for (const pool of n.hugepages) {
        const zonePages = node.zones.filter((z) => z.numa_node === n.os_index && z.hugepage_kib === pool.page_kib)
          .reduce((a, z) => a + z.hugepages, 0);
        const total = Math.max(pool.total, 1);
        const used = pool.total - pool.free;
        const bar = el("div", { class: "bar" },
          el("div", { class: "used", style: "width:" + (100 * used / total) + "%" }),
          el("div", { class: "zonehp", style: "width:" + (100 * Math.max(0, pool.free - Math.max(0, pool.total - zonePages - used)) / total) + "%" }));
        hp.append(el("div", { class: "hplabel" }, "NUMA " + n.os_index + ", " + pool.page_kib + " KiB pages: " +
          pool.total + " total, " + used + " in use, " + pool.free + " free, " + zonePages + " reserved by zones"), bar);
      }
    }
    fill("zones", node.zones.map((z) => el("tr", { "data-zone": z.name },
      el("td", {}, z.name), el("td", { class: "state-" + z.state }, z.state), el("td", {}, z.cpus),
      el("td", {}, String(z.numa_node)), el("td", {}, mib(z.memory_bytes)))), 5);
  }

  function drawJobs() {
    const now = Date.now() / 1000;
    fill("jobs", jobs.slice(0, 30).map((j) => {
      const runtime = j.started_unix ? (j.ended_unix || now) - j.started_unix : null;
      let rate = "";
      let live = "";
      if (j.live) {
        // A running job: its VMM's counters, sampled every 250 ms (live.exits_per_s is the
        // rate between its last two samples).
        rate = Math.round(j.live.exits_per_s).toString();
        live = " (live)";
      } else if (j.stats && j.stats.guest_wall_s > 0) {
        rate = Math.round(j.stats.exits_total / j.stats.guest_wall_s).toString();
      }
      const title = j.live ? j.live.exits + " exits, " + j.live.syscalls + " syscalls, " + j.live.page_faults + " page faults" : "";
      return el("tr", { "data-job": String(j.id) },
        el("td", {}, String(j.id)), el("td", {}, j.owner), el("td", {}, j.spec.program.split("/").pop()),
        el("td", {}, j.spec.zone || ""), el("td", { class: "state-" + j.state }, j.state),
        el("td", { class: "runtime" }, secs(runtime)),
        el("td", { class: "exits-per-s", title: title, "data-live": j.live ? "1" : "0" }, rate + live),
        el("td", {}, j.exit_status == null ? "" : String(j.exit_status)));
    }), 8);
  }

  async function refresh() {
    try {
      const [node, jl, vms] = await Promise.all([get("/v1/node"), get("/v1/jobs"), get("/v1/vms")]);
      drawNode(node);
      // Statistics of the few latest ended jobs (for exits/s).
      const withStats = await Promise.all(jl.slice(0, 10).map((j) =>
        ["succeeded", "failed", "cancelled"].includes(j.state) ? get("/v1/jobs/" + j.id).catch(() => j) : j));
      jobs = withStats.concat(jl.slice(10));
      drawJobs();
      fill("vms", vms.map((v) => el("tr", { "data-vm": v.name },
        el("td", {}, v.name), el("td", { class: "state-" + v.state }, v.state), el("td", {}, v.accel),
        el("td", {}, String(v.vcpus)), el("td", {}, v.memory_mib + " MiB"), el("td", {}, v.commodity_cpus),
        el("td", {}, String(v.progress.jobs)))), 7);
      document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    } catch (e) {
      document.getElementById("conn").textContent = "error: " + e.message;
    }
  }

  let chartUrl = null;
  async function drawIsolation() {
    const note = document.getElementById("isolation-note");
    const img = document.getElementById("isolation");
    try {
      const r = await fetch("/v1/isolation/latest", { headers });
      if (!r.ok) {
        const e = await r.json().catch(() => ({ error: String(r.status) }));
        note.textContent = e.error;
        img.hidden = true;
        return;
      }
      const folder = r.headers.get("X-Dualstack-Results") || "";
      const blob = await r.blob();
      if (chartUrl) URL.revokeObjectURL(chartUrl);
      chartUrl = URL.createObjectURL(blob);
      img.src = chartUrl;
      img.hidden = false;
      img.dataset.results = folder;
      note.textContent = "results/" + folder;
    } catch (e) {
      note.textContent = "error: " + e.message;
    }
  }

  let pending = null;
  function soon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 50);
  }
  function connect() {
    const es = new EventSource("/v1/events" + (token ? "?access_token=" + encodeURIComponent(token) : ""));
    const conn = document.getElementById("conn");
    es.addEventListener("hello", () => { conn.textContent = "live"; conn.className = "conn live"; soon(); });
    for (const kind of ["zone", "job", "vm"]) {
      es.addEventListener(kind, () => {
        eventCount++;
        document.getElementById("events").textContent = String(eventCount);
        soon();
      });
    }
    es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn"; };
  }
  refresh();
  drawIsolation();
  setInterval(drawIsolation, 60000); // new experiment results appear rarely
  connect();
  // Runtimes tick between events; running jobs' live counters change without events, so
  // the job list is fetched again every second while a job runs.
  setInterval(async () => {
    if (jobs.some((j) => j.state === "running")) {
      try {
        const jl = await get("/v1/jobs");
        const ended = new Map(jobs.filter((j) => j.stats).map((j) => [j.id, j]));
        jobs = jl.map((j) => ended.get(j.id) || j);
      } catch (e) { /* the next event or tick retries */ }
    }
    drawJobs();
  }, 1000);
})();
