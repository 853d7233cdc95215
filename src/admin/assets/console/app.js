// The spur console: a page per hash route (#/runs, #/run/ID, …), each drawn from
// the admin API through the session cookie. Everything shown is set as text, never
// as HTML, and the daemon's Content-Security-Policy forbids inline scripts.
"use strict";

const S = { session: null, timers: [], aborts: [] };

// ---- DOM -------------------------------------------------------------------

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed by the CSP, unlike style=""
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const view = () => document.getElementById("view");
const badge = (status) => h("span", { class: `badge status-${status}` }, status);
const when = (t) => (t ? new Date(t).toLocaleString() : "");
const ms = (v) => (v === null || v === undefined ? "–" : v < 1000 ? `${Math.round(v * 10) / 10} ms` : `${(v / 1000).toFixed(2)} s`);
const json = (v) => h("pre", {}, JSON.stringify(v, null, 2));
const can = (scope) => !!S.session && (S.session.scopes.includes("admin") || S.session.scopes.includes(scope));
const table = (heads, rows, attrs) =>
  h("div", { class: "table-wrap" }, h("table", attrs || {}, h("thead", {}, h("tr", {}, heads.map((x) => h("th", {}, x)))), h("tbody", {}, rows)));
const notice = (text, error) => h("p", { class: error ? "notice error" : "notice", role: "status" }, text);

// ---- API -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  const init = { method: opts.method || "GET", headers, credentials: "same-origin", signal: opts.signal };
  if (init.method !== "GET") {
    headers["X-CSRF-Token"] = S.session ? S.session.csrf : "";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body || {});
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  const body = text ? JSON.parse(text) : null;
  if (resp.status === 401 && !path.startsWith("/ui/")) {
    S.session = null;
    showLogin("Your session ended; log in again.");
  }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

const qs = (params) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
};

// ---- session ----------------------------------------------------------------

function showLogin(message) {
  document.getElementById("top").hidden = true;
  view().replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

function showApp() {
  document.getElementById("login").hidden = true;
  document.getElementById("top").hidden = false;
  document.getElementById("whoami").textContent = S.session.name;
  route();
}

async function start() {
  document.getElementById("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("token");
    try {
      S.session = await api("/ui/login", { method: "POST", body: { token: input.value } });
      input.value = "";
      showApp();
    } catch (err) {
      showLogin(err.status === 401 ? "That token is not valid." : err.message);
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/ui/logout", { method: "POST" }); } catch (_) { /* the session is gone either way */ }
    S.session = null;
    stopLive();
    showLogin("Logged out.");
  });
  window.addEventListener("hashchange", () => S.session && route());
  try {
    S.session = await api("/ui/session");
    showApp();
  } catch (_) {
    showLogin();
  }
}

// ---- routing -----------------------------------------------------------------

function stopLive() {
  S.timers.forEach(clearInterval);
  S.aborts.forEach((a) => a.abort());
  S.timers = [];
  S.aborts = [];
}

function every(msPeriod, fn) {
  S.timers.push(setInterval(fn, msPeriod));
}

const ROUTES = [
  [/^#?\/?$/, overview, "#/"],
  [/^#\/runs(?:\?(.*))?$/, runs, "#/runs"],
  [/^#\/run\/(\d+)$/, run, "#/runs"],
  [/^#\/dead-letters$/, deadLetters, "#/dead-letters"],
  [/^#\/approvals$/, approvals, "#/approvals"],
  [/^#\/scripts$/, scripts, "#/scripts"],
  [/^#\/state(?:\?(.*))?$/, state, "#/state"],
];

async function route() {
  stopLive();
  const hash = location.hash || "#/";
  const found = ROUTES.find(([re]) => re.test(hash)) || ROUTES[0];
  const [re, page, nav] = found;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === nav);
  const match = hash.match(re) || [];
  const root = h("div", { class: "page" });
  view().replaceChildren(root);
  try {
    await page(root, match[1]);
  } catch (err) {
    if (err.name === "AbortError") return;
    root.append(notice(err.status === 403 ? `Not allowed: ${err.message}` : err.message, true));
  }
}

// ---- overview ----------------------------------------------------------------

// A step chart: each point holds its value over its interval (t0 to t), the
// x axis spans the data of the last hour.
function chart(title, points, series, unit) {
  const W = 600, H = 160, L = 42, B = 18;
  let max = 0;
  for (const s of series) for (const p of points) max = Math.max(max, s.value(p) || 0);
  const top = max > 0 ? max * 1.1 : 1;
  const t0 = points.length ? points[0].t0 : 0;
  const t1 = points.length ? points[points.length - 1].t : 1;
  const x = (t) => L + ((t - t0) / Math.max(t1 - t0, 1)) * (W - L - 4);
  const y = (v) => 4 + (H - B - 4) * (1 - v / top);
  const g = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-max": String(max), "data-points": String(points.length), role: "img", "aria-label": title });
  g.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }));
  g.append(svg("text", { x: 2, y: 12 }, `${Math.round(top * 100) / 100}${unit}`));
  g.append(svg("text", { x: 2, y: H - B }, `0${unit}`));
  if (points.length) {
    g.append(svg("text", { x: L, y: H - 4 }, new Date(t0).toLocaleTimeString()));
    g.append(svg("text", { x: W - 60, y: H - 4 }, new Date(t1).toLocaleTimeString()));
  }
  for (const s of series) {
    const d = points
      .filter((p) => s.value(p) !== null && s.value(p) !== undefined)
      .map((p, i) => `${i ? "L" : "M"}${x(p.t0).toFixed(1)},${y(s.value(p)).toFixed(1)} L${x(p.t).toFixed(1)},${y(s.value(p)).toFixed(1)}`)
      .join(" ");
    if (d) g.append(svg("path", { class: `series c-${s.name}`, d, "data-series": s.name }));
  }
  const legend = h("div", { class: "legend" }, series.map((s) => h("span", {}, h("i", { class: `c-${s.name}` }), s.label || s.name)));
  return h("div", { class: "card chart-card", dataset: { chart: title } }, h("h3", {}, title), g, legend);
}

async function overview(root) {
  root.append(h("h1", {}, "Overview"));
  const charts = h("div", { class: "grid", id: "charts" });
  const glance = h("div", { class: "grid" });
  root.append(charts, glance);
  const statuses = ["ok", "failed", "retrying", "dead", "waiting", "skipped"];
  const draw = async () => {
    const [hist, scriptsInfo, failed, dead] = await Promise.all([
      api("/api/metrics/history"),
      api("/api/scripts"),
      api(`/api/runs${qs({ status: "failed", since: "1h", limit: 500 })}`),
      api(`/api/runs${qs({ status: "dead", since: "1h", limit: 500 })}`),
    ]);
    const p = hist.points;
    charts.replaceChildren(
      chart("Events / s", p, [{ name: "events", label: "accepted", value: (x) => x.events_per_s }], ""),
      chart("Runs / s by status", p, statuses.map((s) => ({ name: s, value: (x) => x.runs_per_s[s] })), ""),
      chart("Queue depth and parked runs", p, [
        { name: "queued", value: (x) => x.queued },
        { name: "parked", value: (x) => x.parked },
      ], ""),
      chart("Run latency", p, [
        { name: "p50", value: (x) => x.p50_ms },
        { name: "p99", value: (x) => x.p99_ms },
      ], " ms"),
    );
    const byHandler = new Map();
    for (const r of [...failed.runs, ...dead.runs]) {
      const k = `${r.script} · ${r.handler}`;
      const n = byHandler.get(k) || { script: r.script, handler: r.handler, failed: 0 };
      n.failed += 1;
      byHandler.set(k, n);
    }
    glance.replaceChildren(
      h("div", { class: "card", id: "load-errors" }, h("h3", {}, "Scripts with load errors"),
        scriptsInfo.errors.length
          ? h("ul", {}, scriptsInfo.errors.map((e) => h("li", { class: "error mono" }, `${e.file}:${e.line}:${e.column} ${e.message}`)))
          : h("p", { class: "muted" }, "None.")),
      h("div", { class: "card", id: "failing" }, h("h3", {}, "Failing handlers (last hour)"),
        byHandler.size
          ? h("ul", {}, [...byHandler.values()].sort((a, b) => b.failed - a.failed).map((n) => h("li", {},
            h("a", { href: `#/runs${qs({ script: n.script, handler: n.handler, since: "1h" })}` }, `${n.script} · ${n.handler}`),
            ` — ${n.failed} failed`)))
          : h("p", { class: "muted" }, "None.")),
    );
  };
  await draw();
  every(5000, () => draw().catch(() => {}));
}

// ---- runs ----------------------------------------------------------------------

const RUN_FILTERS = [
  ["status", ["", "ok", "failed", "retrying", "dead", "waiting", "skipped"]],
  ["script"], ["handler"], ["user"], ["message_id"],
  ["trigger", ["", "event", "schedule", "webhook", "tool", "approval"]],
  ["since"], ["until"],
];

function runRow(r) {
  return h("tr", { class: "link", dataset: { id: r.id, status: r.status, user: r.user || "" }, onclick: () => { location.hash = `#/run/${r.id}`; } },
    h("td", { class: "mono" }, h("a", { href: `#/run/${r.id}` }, r.id)),
    h("td", {}, badge(r.status)),
    h("td", {}, r.script),
    h("td", { class: "mono" }, r.handler),
    h("td", {}, r.trigger),
    h("td", {}, r.user || ""),
    h("td", { class: "mono" }, r.message_id || r.schedule || r.tool || r.source || r.approval || ""),
    h("td", {}, r.attempt),
    h("td", {}, when(r.started_at)),
    h("td", {}, ms(r.duration_ms)),
  );
}

async function runs(root, query) {
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  root.append(h("h1", {}, "Runs"));
  const form = h("form", { class: "filters", id: "run-filters" },
    RUN_FILTERS.map(([name, options]) => h("label", {}, name.replace("_", " "),
      options
        ? h("select", { name }, options.map((o) => h("option", { value: o, selected: params[name] === o }, o || "any")))
        : h("input", { name, value: params[name] || "", placeholder: name === "since" || name === "until" ? "1h or 2026-12-01T09:00:00Z" : "" }))),
    h("button", { type: "submit" }, "Filter"),
    h("button", { type: "button", onclick: () => { location.hash = "#/runs"; } }, "Clear"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
    location.hash = `#/runs${qs(next)}`;
  });
  const body = h("tbody");
  const wrap = h("div", { class: "table-wrap" }, h("table", { id: "runs" },
    h("thead", {}, h("tr", {}, ["Run", "Status", "Script", "Handler", "Trigger", "User", "Message / source", "Attempt", "Started", "Took"].map((x) => h("th", {}, x)))),
    body));
  const pager = h("div", { class: "pager" });
  root.append(form, wrap, pager);
  const filters = { ...params, limit: 50 };
  const page = await api(`/api/runs${qs(filters)}`);
  body.replaceChildren(...page.runs.map(runRow));
  if (!page.runs.length) body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No runs match.")));
  const last = page.runs[page.runs.length - 1];
  if (params.before) pager.append(h("a", { href: `#/runs${qs({ ...params, before: "" })}` }, "Newest"));
  if (last && page.runs.length === filters.limit) pager.append(h("a", { href: `#/runs${qs({ ...params, before: last.id })}`, id: "older" }, "Older"));
  if (params.before) return; // only the first page follows new runs
  // Live: wait for runs newer than the newest shown, and put them on top.
  let newest = page.runs.length ? page.runs[0].id : 0;
  const abort = new AbortController();
  S.aborts.push(abort);
  (async () => {
    while (!abort.signal.aborted) {
      try {
        const more = await api(`/api/runs${qs({ ...filters, before: "", after: newest, wait: "25s" })}`, { signal: abort.signal });
        if (!more.runs.length) continue;
        newest = more.runs[0].id;
        const empty = body.querySelector("td[colspan]");
        if (empty) empty.parentElement.remove();
        body.prepend(...more.runs.map(runRow));
        while (body.children.length > 200) body.lastChild.remove();
      } catch (err) {
        if (abort.signal.aborted || err.status === 401) return;
        await new Promise((r) => setTimeout(r, 3000));
      }
    }
  })();
}

// ---- one run -------------------------------------------------------------------

function sourceBlock(src) {
  return h("div", { class: "source mono" }, src.lines.map((l) => {
    const hl = l.n === src.line;
    const row = h("div", { class: hl ? "hl" : "" }, h("span", { class: "n" }, l.n), l.text);
    if (hl && src.column) return [row, h("div", { class: "hl caret" }, h("span", { class: "n" }), `${" ".repeat(Math.max(src.column - 1, 0))}^`)];
    return row;
  }));
}

function attemptCard(a, source, isLast) {
  const total = (a.queued_ms || 0) + (a.duration_ms || 0);
  const pct = (v) => `${total > 0 ? (100 * v) / total : 0}%`;
  const card = h("div", { class: "card attempt", dataset: { attempt: a.attempt, status: a.status } },
    h("h3", {}, `Attempt ${a.attempt} `, badge(a.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "Started"), h("dd", {}, when(a.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, when(a.finished_at)),
      h("dt", {}, "Queued / ran"), h("dd", {}, `${ms(a.queued_ms)} waiting, ${ms(a.duration_ms)} running`,
        h("div", { class: "bar", title: "queue delay vs execution" }, h("span", { class: "queued", style: { width: pct(a.queued_ms || 0) } }), h("span", { class: "exec", style: { width: pct(a.duration_ms || 0) } }))),
      a.reason && [h("dt", {}, "Reason"), h("dd", {}, a.reason)],
      a.next_attempt_at && [h("dt", {}, "Next attempt"), h("dd", {}, when(a.next_attempt_at))],
      a.script_hash && [h("dt", {}, "Script version"), h("dd", { class: "mono" }, a.script_hash.slice(0, 12))],
    ));
  if (a.error) {
    const loc = a.error.line ? `${a.error.file || a.script}:${a.error.line}:${a.error.column || 0}` : "";
    card.append(h("div", { class: "run-error", id: isLast ? "run-error" : undefined },
      h("h3", {}, "Error"),
      h("p", { class: "error" }, h("span", { class: "error-kind" }, `${a.error.kind}: `), a.error.message),
      loc && h("p", { class: "mono error-location" }, loc),
      isLast && source && sourceBlock(source)));
  }
  if (a.logs && a.logs.length) {
    card.append(h("h3", {}, "Logs"), h("pre", { class: "logs" }, a.logs.map((l) => `${l.level.toUpperCase().padEnd(5)} ${l.message}`).join("\n")));
    if (a.dropped_logs) card.append(h("p", { class: "muted" }, `${a.dropped_logs} more lines dropped`));
  }
  if (a.calls && a.calls.length) {
    card.append(h("h3", {}, "Outbound calls"), table(["Method", "URL", "Connection", "Status", "Took", "Attempt"],
      a.calls.map((c) => h("tr", { class: "call" },
        h("td", { class: "mono" }, c.method),
        h("td", { class: "mono" }, c.url),
        h("td", {}, c.connection || ""),
        h("td", {}, c.status ? String(c.status) : (c.error || (c.unknown ? "no answer" : "")), c.dry_run ? " (dry run)" : ""),
        h("td", {}, ms(c.ms)),
        h("td", {}, c.attempt)))));
  }
  if (a.decisions && a.decisions.length) card.append(h("h3", {}, "Decisions"), json(a.decisions));
  if (a.result !== undefined && a.result !== null) card.append(h("h3", {}, "Result"), json(a.result));
  return card;
}

async function run(root, id) {
  const t = await api(`/api/runs/${id}/timeline`);
  const r = t.run;
  root.append(h("h1", {}, `Run ${r.id} `, badge(r.status)));
  root.append(h("div", { class: "card" }, h("dl", { class: "facts" },
    h("dt", {}, "Script"), h("dd", {}, r.script),
    h("dt", {}, "Handler"), h("dd", { class: "mono" }, r.handler),
    h("dt", {}, "Trigger"), h("dd", {}, r.trigger),
    r.user && [h("dt", {}, "User"), h("dd", {}, h("a", { href: `#/runs${qs({ user: r.user })}` }, r.user))],
    r.message_id && [h("dt", {}, "messageId"), h("dd", { class: "mono" }, r.message_id)],
    r.event && [h("dt", {}, "Event"), h("dd", {}, r.event)],
    r.schedule && [h("dt", {}, "Schedule"), h("dd", { class: "mono" }, r.schedule)],
    r.tool && [h("dt", {}, "Tool"), h("dd", {}, `${r.tool} (by ${r.client})`)],
    r.approval && [h("dt", {}, "Approval request"), h("dd", { class: "mono" }, r.approval)],
    h("dt", {}, "Job"), h("dd", { class: "mono" }, r.job_id),
  )));
  if (t.waiting) root.append(h("div", { class: "card", id: "waiting" }, h("h3", {}, "Waiting"), json(t.waiting)));
  if (t.approvals.length) {
    root.append(h("h2", {}, "Approvals"), table(["Request", "Status", "Decided by", "When", "Comment"],
      t.approvals.map((a) => h("tr", {}, h("td", {}, a.title), h("td", {}, badge(a.status)), h("td", {}, a.decided_by || ""), h("td", {}, when(a.decided_at)), h("td", {}, a.comment || "")))));
  }
  root.append(h("h2", {}, `Attempts (${t.attempts.length})`));
  const list = t.attempts.length ? t.attempts : [r];
  list.forEach((a, i) => root.append(attemptCard(a, t.source, i === list.length - 1)));
  if (t.journal.length) {
    root.append(h("h2", {}, "Journal"), table(["Key", "Value"],
      t.journal.map((j) => h("tr", {}, h("td", { class: "mono" }, j.key), h("td", {}, json(j.value))))));
  }
}

// ---- dead letters ----------------------------------------------------------------

async function deadLetters(root) {
  root.append(h("h1", {}, "Dead letters"));
  const result = h("div", { id: "dead-result" });
  const { dead_letters: items } = await api("/api/dead-letters?limit=500");
  const mayReplay = can("runs:replay");
  const replay = async (ids) => {
    const lines = [];
    for (const id of ids) {
      try {
        const r = await api(`/api/dead-letters/${id}/replay`, { method: "POST" });
        lines.push(notice(`Dead letter ${id} replayed as job ${r.job_id}.`));
      } catch (err) {
        lines.push(notice(`Dead letter ${id}: ${err.message}`, true));
      }
    }
    await route();
    document.getElementById("dead-result").replaceChildren(...lines);
  };
  const rows = items.map((d) => h("tr", { dataset: { id: d.id } },
    mayReplay && h("td", {}, h("input", { type: "checkbox", class: "pick", value: d.id, "aria-label": `select ${d.id}` })),
    h("td", { class: "mono" }, h("a", { href: `#/run/${d.run_id}` }, d.id)),
    h("td", {}, d.job.script), h("td", { class: "mono" }, d.job.handler),
    h("td", {}, d.reason), h("td", {}, d.attempts), h("td", {}, when(d.dead_at)),
    mayReplay && h("td", {}, h("button", { type: "button", class: "replay", onclick: () => replay([d.id]) }, "Replay"))));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No dead letters.")));
  if (mayReplay && items.length) {
    root.append(h("div", { class: "actions" }, h("button", {
      type: "button", id: "replay-selected", class: "primary",
      onclick: () => replay([...document.querySelectorAll("input.pick:checked")].map((c) => c.value)),
    }, "Replay selected")));
  }
  root.append(result, table([mayReplay && "", "Id", "Script", "Handler", "Reason", "Attempts", "Dead since", mayReplay && ""].filter((x) => x !== false), rows, { id: "dead-letters" }));
}

// ---- approvals -------------------------------------------------------------------

async function approvals(root) {
  root.append(h("h1", {}, "Approvals"));
  const result = h("div", { id: "approval-result" });
  root.append(result);
  const [pending, all] = await Promise.all([api("/api/approvals?status=pending"), api("/api/approvals")]);
  const mayDecide = can("approvals:decide");
  const decide = async (id, verb, comment) => {
    try {
      const r = await api(`/api/approvals/${id}/${verb}`, { method: "POST", body: comment ? { comment } : {} });
      await route();
      document.getElementById("approval-result").replaceChildren(notice(`${r.approval.title}: ${r.approval.status} by ${r.approval.decided_by}.`));
    } catch (err) {
      result.replaceChildren(notice(err.message, true));
    }
  };
  root.append(h("h2", {}, `Pending (${pending.approvals.length})`));
  if (!pending.approvals.length) root.append(h("p", { class: "muted" }, "Nothing waits for a decision."));
  for (const a of pending.approvals) {
    const comment = h("textarea", { class: "comment", placeholder: "Comment (optional)", "aria-label": "comment" });
    root.append(h("div", { class: "card approval", dataset: { id: a.id } },
      h("h3", {}, a.title, " ", badge(a.status)),
      a.body && h("p", {}, a.body),
      h("dl", { class: "facts" },
        h("dt", {}, "Asked by"), h("dd", {}, `${a.script} · ${a.handler}`),
        h("dt", {}, "Asked"), h("dd", {}, when(a.created_at)),
        a.expires_at && [h("dt", {}, "Expires"), h("dd", {}, `${when(a.expires_at)} (then ${a.approve_on_expiry ? "approved" : "rejected"})`)],
        a.approvers && [h("dt", {}, "Approvers"), h("dd", {}, a.approvers.join(", "))],
        a.email && [h("dt", {}, "Emailed"), h("dd", {}, a.email.join(", "))],
        h("dt", {}, "Run"), h("dd", {}, h("a", { href: `#/runs${qs({ job: a.job_id })}`, class: "job" }, `job ${a.job_id}`))),
      a.data && Object.keys(a.data).length ? json(a.data) : null,
      mayDecide
        ? h("div", { class: "actions" }, comment,
          h("button", { type: "button", class: "approve primary", onclick: () => decide(a.id, "approve", comment.value) }, "Approve"),
          h("button", { type: "button", class: "reject danger", onclick: () => decide(a.id, "reject", comment.value) }, "Reject"))
        : h("p", { class: "muted" }, `${S.session.name} may not decide (needs approvals:decide).`)));
  }
  const decided = all.approvals.filter((a) => a.status !== "pending");
  root.append(h("h2", {}, "History"), table(["Request", "Status", "Decided by", "When", "Comment"],
    decided.map((a) => h("tr", { dataset: { id: a.id } }, h("td", {}, a.title), h("td", {}, badge(a.status)), h("td", {}, a.decided_by || ""), h("td", {}, when(a.decided_at)), h("td", {}, a.comment || ""))),
    { id: "approval-history" }));
}

// ---- scripts -----------------------------------------------------------------------

const kindOf = (k) => (k.filter ? `${k.on}(${k.filter})` : k.on);

async function scripts(root) {
  root.append(h("h1", {}, "Scripts"));
  const [info, sched] = await Promise.all([api("/api/scripts"), api("/api/schedules")]);
  if (info.errors.length) {
    root.append(h("div", { class: "card", id: "script-errors" }, h("h3", {}, "Load errors"),
      h("ul", {}, info.errors.map((e) => h("li", { class: "error mono" }, `${e.file}:${e.line}:${e.column} ${e.message}`)))));
  }
  for (const s of info.scripts) {
    const schedules = sched.schedules.filter((x) => x.script === s.name);
    const tools = s.handlers.filter((x) => x.kind.on === "tool");
    const handlers = s.handlers.filter((x) => x.kind.on !== "tool" && x.kind.on !== "schedule");
    root.append(h("div", { class: "card script", dataset: { name: s.name } },
      h("h3", {}, s.name),
      h("dl", { class: "facts" },
        h("dt", {}, "File"), h("dd", { class: "mono" }, s.path),
        h("dt", {}, "Content hash"), h("dd", { class: "mono" }, s.hash),
        h("dt", {}, "Loaded"), h("dd", {}, when(s.loaded_at))),
      handlers.length && [h("h3", {}, "Handlers"), table(["Handler", "On", "Line"],
        handlers.map((x) => h("tr", {}, h("td", { class: "mono" }, h("a", { href: `#/runs${qs({ script: s.name, handler: x.key })}` }, x.key)), h("td", {}, kindOf(x.kind)), h("td", {}, x.line))))],
      tools.length && [h("h3", {}, "Tools"), table(["Tool", "Line"],
        tools.map((x) => h("tr", {}, h("td", { class: "mono" }, x.kind.filter), h("td", {}, x.line))))],
      schedules.length && [h("h3", {}, "Schedules"), table(["Handler", "Cron", "Zone", "Next fire", "Last fired"],
        schedules.map((x) => h("tr", { class: "schedule" }, h("td", { class: "mono" }, x.handler), h("td", { class: "mono" }, x.expr), h("td", {}, x.tz), h("td", { class: "next-fire" }, when(x.next_fire_at)), h("td", {}, when(x.last_fired_at)))))],
    ));
  }
  if (!info.scripts.length) root.append(h("p", { class: "muted" }, "No scripts are loaded."));
}

// ---- state ---------------------------------------------------------------------------

async function state(root, query) {
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  root.append(h("h1", {}, "State"));
  const info = await api("/api/scripts");
  const names = [...info.scripts.map((s) => s.name.replace(/\.rhai$/, "")), "shared"];
  const script = params.script || names[0] || "shared";
  const form = h("form", { class: "filters", id: "state-form" },
    h("label", {}, "script", h("select", { name: "script", id: "state-script" }, names.map((n) => h("option", { value: n, selected: n === script }, n)))),
    h("label", {}, "key prefix", h("input", { name: "prefix", id: "state-prefix", value: params.prefix || "" })),
    h("button", { type: "submit" }, "Browse"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/state${qs(Object.fromEntries(new FormData(form)))}`;
  });
  const detail = h("div", { id: "state-value" });
  root.append(form);
  const { entries } = await api(`/api/state/${encodeURIComponent(script)}${qs({ prefix: params.prefix, limit: 500 })}`);
  const rows = entries.map((e) => h("tr", { class: "link", dataset: { key: e.key }, onclick: () => detail.replaceChildren(h("div", { class: "card" }, h("h3", { class: "mono" }, e.key), e.expires_at ? h("p", { class: "muted" }, `expires ${when(e.expires_at)}`) : null, json(e.value))) },
    h("td", { class: "mono" }, e.key),
    h("td", { class: "mono" }, JSON.stringify(e.value).slice(0, 120)),
    h("td", {}, when(e.expires_at))));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No keys.")));
  root.append(table(["Key", "Value", "Expires"], rows, { id: "state-keys" }), detail);
}

start();
