// The p2psched dashboard: asks the node's control API (same origin, bearer token) once a
// second and draws what it answers. The token comes from the URL fragment (#token=...), which
// never reaches a server, and stays in this tab's sessionStorage.
// Every string from the API (peers choose model names, errors, addresses) enters the page as
// text (append/textContent), never as HTML.

const REFRESH_MS = 1000;
const TIMEOUT_MS = 4000;
const STALE_AFTER_MS = 3500; // no answer for this long: the data on screen is marked stale
const TOKEN_KEY = "p2psched.token";
const FAILURES_SHOWN = 50;
const FALLBACK_JOBS_PER_TICK = 5; // older nodes (no /v1/failures): task queries per refresh
const ID_CHARS = 12;
const SETTLED_JOBS_SHOWN = 15; // finished jobs listed after the running ones, newest first

const byId = (id) => document.getElementById(id);

// -- the token ---------------------------------------------------------------------------

function takeToken() {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    // Off the address bar: it would otherwise be copied along with the URL or shown on screen.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class Refused extends Error {}

async function get(path, token) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) throw new Refused(body?.message ?? "the node refused the token");
  return { status: response.status, body };
}

// -- building the DOM (text only) ---------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "width") node.style.width = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const td = (content, cls, title) => el("td", { class: cls, title }, content);
const num = (content, cls = "", title) => td(content, `num ${cls}`.trim(), title);
const muted = (text) => el("span", { class: "muted" }, text);

function shortId(hex) {
  return el("span", { class: "id", title: hex }, hex ? hex.slice(0, ID_CHARS) : "—");
}

function tags(values, cls = "tag") {
  if (!values || values.length === 0) return muted("—");
  return values.map((v) => el("span", { class: cls, title: String(v) }, String(v)));
}

// A table's rows; when there are none, `emptyId`'s message shows, or else a "none" row.
function fill(tbodyId, rows, emptyId) {
  const tbody = byId(tbodyId);
  if (emptyId) {
    byId(emptyId).hidden = rows.length > 0;
    tbody.closest("table").hidden = rows.length === 0;
  } else if (rows.length === 0) {
    const columns = tbody.closest("table").querySelectorAll("thead th").length;
    rows = [el("tr", {}, el("td", { colspan: columns, class: "muted" }, "none"))];
  }
  tbody.replaceChildren(...rows);
}

// -- formatting ---------------------------------------------------------------------------

function seconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  if (s < 9.95) return `${s.toFixed(1)} s`;
  const r = Math.round(s);
  const two = (n) => String(n).padStart(2, "0");
  if (r < 60) return `${r} s`;
  if (r < 3600) return `${Math.floor(r / 60)} m ${two(r % 60)} s`;
  if (r < 86400) return `${Math.floor(r / 3600)} h ${two(Math.floor((r % 3600) / 60))} m`;
  return `${Math.floor(r / 86400)} d ${Math.floor((r % 86400) / 3600)} h`;
}

function millis(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : seconds(ms / 1000);
}

function money(x) {
  if (x === "inf" || x === Infinity) return "∞";
  if (x === null || x === undefined || x === "") return "—";
  const n = Number(x);
  return Number.isFinite(n) ? n.toFixed(4) : String(x);
}

function count(n) {
  return Number.isFinite(n) ? n.toLocaleString("en-US") : "—";
}

function ago(epochSeconds) {
  if (typeof epochSeconds !== "number") return "—";
  return `${seconds(Math.max(0, Date.now() / 1000 - epochSeconds))} ago`;
}

// The wall-clock time of an epoch, for a tooltip; undefined (no tooltip) when there is none.
function clock(epochSeconds) {
  return typeof epochSeconds === "number"
    ? new Date(epochSeconds * 1000).toLocaleString("en-GB")
    : undefined;
}

// -- what the node answered ---------------------------------------------------------------

const seen = {
  node: null,
  jobs: [],
  workers: [],
  queue: [],
  gate: null,
  failures: null, // from /v1/failures; null: not known yet or not offered
  peers: null,
  lastAnswer: 0,
  problem: "",
  unanswered: new Set(), // sections whose last request failed
};

// Endpoints newer than some nodes: null until asked, false after a 404 (an older node).
const offered = { failures: null, peers: null };

// Failed tasks per job, for nodes without /v1/failures: asked again only when the count moves.
const failedTasks = new Map(); // job -> { failed, tasks: [...] }

async function refresh(token) {
  const paths = {
    node: "/v1/node",
    jobs: "/v1/jobs",
    workers: "/v1/workers",
    queue: "/v1/queue/info",
    gate: "/v1/gate",
  };
  if (offered.failures !== false) paths.failures = `/v1/failures?limit=${FAILURES_SHOWN}`;
  if (offered.peers !== false) paths.peers = "/v1/peers";
  const names = Object.keys(paths);
  const answers = await Promise.allSettled(names.map((n) => get(paths[n], token)));
  const refused = answers.find((a) => a.status === "rejected" && a.reason instanceof Refused);
  if (refused) throw refused.reason;

  seen.unanswered.clear();
  names.forEach((name, i) => {
    const a = answers[i];
    if (a.status === "rejected") {
      seen.unanswered.add(name);
      if (name === "node") seen.problem = describe(a.reason);
      return;
    }
    const { status, body } = a.value;
    if (status === 404 && (name === "failures" || name === "peers")) {
      offered[name] = false;
      seen[name] = null;
    } else if (status === 404 && name === "gate") {
      seen.gate = null; // not a gate
    } else if (status !== 200) {
      seen.unanswered.add(name);
      if (name === "node") seen.problem = body?.message ?? `HTTP ${status}`;
    } else {
      take(name, body);
    }
  });
  if (!seen.unanswered.has("node")) {
    seen.lastAnswer = Date.now();
    seen.problem = "";
  }
  if (offered.failures === false) await failuresFromTasks(token);
}

function take(name, body) {
  if (name === "queue") seen.queue = body.queues ?? [];
  else if (name === "jobs") seen.jobs = body.jobs ?? [];
  else if (name === "workers") seen.workers = body.workers ?? [];
  else if (name === "failures") {
    offered.failures = true;
    seen.failures = body.failures ?? [];
  } else if (name === "peers") {
    offered.peers = true;
    seen.peers = body.peers ?? [];
  } else seen[name] = body;
}

function describe(error) {
  if (error?.name === "TimeoutError") return `no answer within ${TIMEOUT_MS / 1000} s`;
  if (error instanceof TypeError) return "connection failed (the node stopped, or is unreachable)";
  return String(error?.message ?? error);
}

async function failuresFromTasks(token) {
  const jobs = seen.jobs.filter((j) => j.failed > 0);
  const live = new Set(jobs.map((j) => j.job));
  for (const job of failedTasks.keys()) if (!live.has(job)) failedTasks.delete(job);
  const stale = jobs.filter((j) => failedTasks.get(j.job)?.failed !== j.failed);
  await Promise.all(
    stale.slice(0, FALLBACK_JOBS_PER_TICK).map(async (j) => {
      const tasks = [];
      for (const state of ["failed", "timed_out"]) {
        try {
          const { status, body } = await get(
            `/v1/jobs/${encodeURIComponent(j.job)}/tasks?state=${state}`,
            token,
          );
          if (status !== 200) return; // asked again next time
          tasks.push(...(body.tasks ?? []));
        } catch (e) {
          if (e instanceof Refused) throw e;
          return;
        }
      }
      failedTasks.set(j.job, { failed: j.failed, at: j.submitted_at, tasks });
    }),
  );
}

function recentFailures() {
  if (seen.failures !== null) return seen.failures;
  const rows = [];
  const jobs = [...failedTasks.entries()].sort((a, b) => (b[1].at ?? 0) - (a[1].at ?? 0));
  for (const [job, { tasks }] of jobs) {
    for (const t of tasks) {
      const reason = t.state === "timed_out" && !t.error ? "timed out" : t.error;
      rows.push({ job, task: t.task, worker: t.worker, reason, at: null });
    }
  }
  return rows.slice(0, FAILURES_SHOWN);
}

// -- drawing ------------------------------------------------------------------------------

function drawNode() {
  const n = seen.node;
  if (!n) return;
  const parts = [
    el("span", { class: "field" }, muted("node "), shortId(n.node_id)),
    el("span", { class: "field" }, tags(n.roles, "role")),
    el("span", { class: "field" }, muted("DHT "), el("span", { class: "mono" }, n.dht)),
    el("span", { class: "field" }, muted("routing "), count(n.routing_table)),
  ];
  if (n.channel) {
    const channel = el("span", { class: "mono" }, n.channel);
    parts.push(el("span", { class: "field" }, muted("tasks on "), channel));
  }
  if (n.reachability) {
    const cls = n.reachability === "public" ? "good" : n.reachability === "private" ? "warn" : "";
    parts.push(
      el(
        "span",
        { class: "field", title: n.reachability_why ?? undefined },
        muted("reachability "),
        el("span", { class: `badge ${cls}` }, n.reachability),
        n.relay_moves ? muted(` · ${n.relay_moves} relay moves`) : null,
      ),
    );
  }
  byId("node").replaceChildren(...parts);
}

// A job's state as the node says it (the CLI shows the same word); a failed job that
// completed some of its tasks is marked less loudly than one that completed none.
const JOB_BADGES = { running: "info", completed: "good", cancelled: "muted-badge" };

function jobBadge(j) {
  if (j.state === "failed") return j.completed > 0 ? "warn" : "bad";
  return JOB_BADGES[j.state] ?? "";
}

function progressBar(j) {
  const total = Math.max(1, j.total);
  const pct = (n) => `${(100 * n) / total}%`;
  const running = j.running ?? 0;
  return el(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": j.total,
      "aria-valuenow": j.completed,
    },
    el("span", { class: "seg ok", width: pct(j.completed) }),
    el("span", { class: "seg bad", width: pct(j.failed) }),
    el("span", { class: "seg run", width: pct(running) }),
    el("span", { class: "bar-text" }, `${count(j.completed)} / ${count(j.total)}`),
  );
}

function queued(j) {
  return Math.max(0, j.total - j.completed - j.failed - (j.running ?? 0));
}

function drawJobs() {
  const jobs = [...seen.jobs].sort(
    (a, b) =>
      (a.state === "running" ? 0 : 1) - (b.state === "running" ? 0 : 1) ||
      (b.submitted_at ?? 0) - (a.submitted_at ?? 0),
  );
  const running = jobs.filter((j) => j.state === "running");
  const shown = [...running, ...jobs.slice(running.length, running.length + SETTLED_JOBS_SHOWN)];
  const rows = shown.map((j) => {
    const settled = j.state === "completed" || j.state === "cancelled";
    return el(
      "tr",
      { "data-job": j.job, class: settled ? "settled" : "" },
      td(el("span", { class: "mono strong" }, j.job), "nowrap", clock(j.submitted_at)),
      td(el("span", { class: `badge ${jobBadge(j)}` }, j.state), "state"),
      td(progressBar(j), "progress-col"),
      num(count(j.completed), "completed"),
      num(count(j.failed), j.failed ? "failed bad-text" : "failed"),
      num(count(j.running ?? 0), "running"),
      num(count(queued(j)), "queued"),
      num(count(j.workers ?? 0)),
      num(money(j.spent)),
      num(money(j.budget)),
      num(seconds(j.elapsed_s)),
      num(j.state === "running" ? seconds(j.eta_s) : "—"),
    );
  });
  fill("jobs-rows", rows, "jobs-empty");
  const hidden = jobs.length - shown.length;
  byId("jobs-note").textContent =
    `${running.length} running · ${jobs.length} in all` +
    (hidden ? ` · ${hidden} older finished not shown` : "");
}

function workerRows() {
  const rows = new Map();
  for (const ad of seen.workers) rows.set(ad.node_id, { id: ad.node_id, ad });
  for (const q of seen.queue) {
    const row = rows.get(q.ti_uuid) ?? { id: q.ti_uuid, ad: null };
    row.queue = q;
    rows.set(q.ti_uuid, row);
  }
  for (const p of seen.peers ?? []) {
    const row = rows.get(p.node_id);
    if (row) row.peer = p;
  }
  return [...rows.values()].sort(
    (a, b) => (a.ad ? 0 : 1) - (b.ad ? 0 : 1) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

const HEALTH = {
  closed: ["ok", "good", "taking tasks"],
  open: ["skipped", "bad", "its failures opened the breaker: no tasks until it cools down"],
  "half-open": ["on trial", "warn", "the breaker lets one task through to test it"],
};

function drawWorkers() {
  const rows = workerRows().map(({ id, ad, queue, peer }) => {
    const view = queue?.view;
    // This node's record of its results and claims: with its wait, or with its ad.
    const rep = view?.reputation ?? ad?.reputation;
    const [health, hcls, hwhy] = rep?.barred
      ? ["barred", "bad", rep.barred_for]
      : (HEALTH[view?.state] ?? [ad ? "new" : "—", "", undefined]);
    const last = view?.last_task;
    const lastCell = last
      ? el(
          "span",
          { title: last.reason ?? undefined, class: last.outcome === "ok" ? "" : "bad-text" },
          `${last.outcome} · ${ago(last.at)}`,
        )
      : muted("—");
    const wait = queue
      ? el(
          "span",
          { title: `source: ${queue.source}` },
          millis(queue.waiting_time_expect),
          muted(` ±${millis(queue.waiting_time_error)}`),
        )
      : muted("—");
    return el(
      "tr",
      { "data-worker": id, class: ad ? "" : "gone" },
      td(shortId(id), "", ad ? undefined : "no current ad: it left, or its ad expired"),
      td(ad ? ad.addresses.join(" ") : muted(peer ? peer.address : "no ad"), "mono"),
      td(ad ? tags(ad.gpus.map((g) => g.model)) : "—"),
      td(ad ? tags(ad.models) : "—"),
      td(ad ? tags(ad.drivers, "tag plain") : "—"),
      num(ad ? count(ad.free_slots) : "—", ad && ad.free_slots === 0 ? "warn-text" : ""),
      num(ad ? money(ad.price) : "—"),
      num(wait),
      num(queue ? millis(queue.run_time_expect) : "—"),
      num(view ? count(view.succeeded_tasks) : "—"),
      num(view ? count(view.failed_tasks) : "—", view?.failed_tasks ? "bad-text" : ""),
      num(
        rep ? `${count(rep.verified)} / ${count(rep.disputed)}` : "—",
        rep?.disputed ? "bad-text" : "",
      ),
      td(rep ? rep.capacity : "—", rep?.capacity === "failed" ? "bad-text" : ""),
      td(el("span", { class: `badge ${hcls}`, title: hwhy }, health)),
      td(lastCell),
    );
  });
  fill("workers-rows", rows, "workers-empty");
  const free = seen.workers.reduce((s, w) => s + (w.free_slots ?? 0), 0);
  byId("workers-note").textContent = `${seen.workers.length} advertised · ${free} free slots`;
}

function drawFailures() {
  const failures = recentFailures();
  const rows = failures.map((f) =>
    el(
      "tr",
      { "data-task": f.task },
      num(f.at == null ? "—" : ago(f.at), "when", clock(f.at)),
      td(el("span", { class: "mono" }, f.task ?? f.job), "nowrap"),
      td(f.worker ? shortId(f.worker) : muted("—")),
      td(f.reason ?? "", "reason"),
    ),
  );
  fill("failures-rows", rows, "failures-empty");
  byId("failures-note").textContent =
    seen.failures === null && offered.failures === false ? "from each job's failed tasks" : "";
}

function drawGate() {
  const g = seen.gate;
  byId("gate").hidden = !g;
  if (!g) return;
  const reservations = g.reservations ?? [];
  const circuits = g.circuits ?? [];
  const pair = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
  byId("gate-summary").replaceChildren(
    ...pair("relay", el("span", { class: "mono" }, g.relay)),
    ...pair("reservations", `${count(reservations.length)} / ${count(g.limits?.reservations)}`),
    ...pair("circuits", `${count(circuits.length)} / ${count(g.limits?.circuits)}`),
  );
  fill(
    "reservations-rows",
    reservations.map((r) =>
      el(
        "tr",
        {},
        td(shortId(r.peer)),
        td(r.ip, "mono"),
        num(seconds(r.since)),
        num(seconds(r.expires_in)),
      ),
    ),
  );
  fill(
    "circuits-rows",
    circuits.map((c) =>
      el(
        "tr",
        {},
        num(c.id),
        td([shortId(c.from), muted(" → "), shortId(c.to), c.up ? null : muted(" (opening)")]),
        num(seconds(c.open_for)),
        num(count(c.bytes)),
      ),
    ),
  );
  const counters = Object.entries(g.counters ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  byId("gate-counters").replaceChildren(
    ...(counters.length
      ? counters.flatMap(([k, v]) => pair(k.replaceAll("_", " "), count(v)))
      : pair("none yet", "")),
  );
}

function drawPeers() {
  const peers = seen.peers;
  byId("peers").hidden = peers === null;
  if (peers === null) return;
  const age = (p) => p.last_seen_s ?? Infinity;
  const sorted = [...peers].sort((a, b) => age(a) - age(b));
  fill(
    "peers-rows",
    sorted.slice(0, 30).map((p) =>
      el(
        "tr",
        {},
        td(shortId(p.node_id)),
        td(p.address, "mono"),
        num(`${seconds(p.last_seen_s)} ago`),
      ),
    ),
  );
  byId("peers-note").textContent = peers.length > 30 ? `30 of ${peers.length}` : `${peers.length}`;
}

function kpi(label, value, cls = "", sub = "") {
  return el(
    "div",
    { class: `kpi ${cls}` },
    el("div", { class: "kpi-value" }, value),
    el("div", { class: "kpi-label" }, label, sub ? muted(` · ${sub}`) : null),
  );
}

function drawKpis() {
  const jobs = seen.jobs;
  const sum = (f) => jobs.reduce((s, j) => s + (f(j) ?? 0), 0);
  const running = jobs.filter((j) => j.state === "running");
  const failed = sum((j) => j.failed);
  const free = seen.workers.reduce((s, w) => s + (w.free_slots ?? 0), 0);
  const skipped = seen.queue.filter(
    (q) => q.view?.state === "open" || q.view?.reputation?.barred,
  ).length;
  byId("kpis").replaceChildren(
    kpi("workers", count(seen.workers.length), "", `${count(free)} free slots`),
    kpi("jobs running", count(running.length), "", `${count(jobs.length)} in all`),
    // `running` in a job's status counts what its workers hold, started or in their queues:
    // the scheduler learns a task started only from the worker's next heartbeat.
    kpi("tasks on workers", count(sum((j) => j.running))),
    kpi("tasks queued", count(running.reduce((s, j) => s + queued(j), 0))),
    kpi("tasks completed", count(sum((j) => j.completed))),
    kpi("tasks failed", count(failed), failed ? "bad" : ""),
    kpi("workers skipped", count(skipped), skipped ? "warn" : ""),
    kpi("spent", money(sum((j) => Number(j.spent)))),
  );
}

function drawFreshness() {
  const box = byId("freshness");
  const age = Date.now() - seen.lastAnswer;
  const stale = seen.lastAnswer === 0 ? seen.problem !== "" : age > STALE_AFTER_MS;
  document.body.classList.toggle("stale", stale);
  box.classList.toggle("stale", stale);
  box.classList.toggle("live", !stale && seen.lastAnswer > 0);
  let text;
  if (stale) {
    const since = seen.lastAnswer ? `for ${seconds(age / 1000)}` : "yet";
    text = `STALE · no answer ${since}${seen.problem ? `: ${seen.problem}` : ""}`;
  } else if (seen.lastAnswer) {
    const silent = [...seen.unanswered];
    const partial = silent.length ? ` · no answer from ${silent.join(", ")}` : "";
    text = `live · updated ${new Date(seen.lastAnswer).toLocaleTimeString("en-GB")}${partial}`;
  } else text = "connecting…";
  byId("freshness-text").textContent = text;
  const running = seen.jobs.filter((j) => j.state === "running").length;
  const failed = seen.jobs.reduce((s, j) => s + (j.failed ?? 0), 0);
  document.title = [
    stale ? "STALE" : null,
    running ? `${running} running` : null,
    failed ? `${failed} failed` : null,
    "p2psched",
  ]
    .filter(Boolean)
    .join(" · ");
}

const SECTIONS = [drawNode, drawKpis, drawJobs, drawWorkers, drawFailures, drawGate, drawPeers];

function draw() {
  // One section that cannot draw what a node of another version sent leaves the others live.
  for (const section of SECTIONS) {
    try {
      section();
    } catch (e) {
      console.error(`p2psched dashboard: ${section.name}:`, e);
    }
  }
  drawFreshness();
}

// -- the page -----------------------------------------------------------------------------

function showLogin(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  byId("board").hidden = true;
  byId("login").hidden = false;
  byId("login-title").textContent = why
    ? "The node refused this page's token"
    : "This page needs the node's API token";
  byId("login-why").textContent = why ?? "";
  byId("freshness-text").textContent = why ? "token refused" : "no token";
}

let running = null; // the token the refresh loop runs with

async function loop(token) {
  while (running === token) {
    const started = Date.now();
    try {
      await refresh(token);
    } catch (e) {
      if (e instanceof Refused) {
        running = null;
        showLogin(`${e.message}. Get a fresh address as shown below.`);
        return;
      }
      seen.problem = describe(e);
    }
    if (running !== token) return;
    draw();
    await new Promise((r) => setTimeout(r, Math.max(100, REFRESH_MS - (Date.now() - started))));
  }
}

function start() {
  const token = takeToken();
  if (!token) {
    showLogin(null);
    return;
  }
  byId("login").hidden = true;
  byId("board").hidden = false;
  if (running !== token) {
    running = token;
    loop(token);
  }
}

window.addEventListener("hashchange", start);
setInterval(drawFreshness, 500); // the stale mark appears even while a request hangs
start();
