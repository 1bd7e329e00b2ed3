// The operations page: plain modules, no build step. It talks to the same /v1 API as any client,
// authenticated by the session cookie that POST /v1/session sets (EventSource cannot send an
// Authorization header). Lists refresh every few seconds; a running operation is followed live.
// Every value from the API is written as text (textContent, Option), never parsed as markup.

const $ = (selector) => document.querySelector(selector);
const TERMINAL = new Set(["operation_completed", "operation_error", "operation_cancelled"]);
// Items per page of each list; `/ui/?limit=N` shows them N at a time.
const LIMIT = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("limit"))
                                           || 50));
let watching = null; // {id, source, live}
let timer = null;
let latest = 0; // the newest refresh; an older one's answers arrive late and are dropped
let graphs = []; // the graphs of the last refresh
let open = null; // the graph whose panel is shown
// How many pages of each list are shown; "more" adds one.
const pages = {subscriptions: 1, graphs: 1, operations: 1, members: 1, backups: 1};
const loads = {members: 0, backups: 0}; // the newest load of each; an older one's is dropped

async function api(path, options = {}) {
  const answer = await fetch(path, {
    credentials: "same-origin",
    headers: {"Content-Type": "application/json"},
    ...options,
  });
  if (answer.status === 204) return null;
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = new Error(body.message || `${answer.status}`);
    error.status = answer.status;
    throw error;
  }
  return body;
}

const post = (path, body) => api(path, body === undefined ? {method: "POST"}
  : {method: "POST", body: JSON.stringify(body)});
const graphPath = (id, rest = "") => `/v1/graphs/${encodeURIComponent(id)}${rest}`;

async function list(path, key, count) {
  // The first `count` pages of a list (newest first) and whether there are more.
  const items = [];
  let cursor = null;
  for (let page = 0; page < count; page++) {
    const query = new URLSearchParams({limit: LIMIT});
    if (cursor) query.set("cursor", cursor);
    const body = await api(`${path}?${query}`);
    items.push(...body[key]);
    cursor = body.next_cursor ?? null;
    if (!cursor) break;
  }
  return {items, more: cursor !== null};
}

async function act(errorSelector, work, control) {
  // Run what a click asks; its failure's message goes under the part of the page it concerns.
  $(errorSelector).textContent = "";
  if (control) control.disabled = true;
  try {
    await work();
  } catch (error) {
    if (error.status === 401) signedOut();
    else $(errorSelector).textContent = error.message;
  } finally {
    if (control) control.disabled = false;
  }
}

function text(value) {
  // A value as the API gave it: a string as it is, anything else as JSON.
  return typeof value === "string" ? value : JSON.stringify(value);
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = value ?? "–";
  if (className) td.className = className;
  return td;
}

function button(label, onClick) {
  const made = document.createElement("button");
  made.type = "button";
  made.textContent = label;
  made.addEventListener("click", () => onClick(made));
  return made;
}

function when(iso) {
  // An ISO time as "2026-01-31 12:00:00 UTC"; as given if it is not one.
  const time = iso ? new Date(iso) : null;
  return time && !isNaN(time) ? `${time.toISOString().slice(0, 19).replace("T", " ")} UTC` : iso;
}

function size(bytes) {
  if (bytes == null) return "–";
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(0)} KiB`
    : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function refresh() {
  const mine = ++latest;
  const [subscriptions, found, operations] = await Promise.all([
    list("/v1/subscriptions", "subscriptions", pages.subscriptions),
    list("/v1/graphs", "graphs", pages.graphs),
    list("/v1/operations", "operations", pages.operations)]);
  if (mine !== latest) return;

  const subs = $("#subscriptions tbody");
  subs.replaceChildren();
  for (const s of subscriptions.items) {
    const row = subs.insertRow();
    cell(row, s.subscription_id, "id");
    cell(row, s.resource_type);
    cell(row, s.plan_name);
    cell(row, s.status, `status ${s.status}`);
    cell(row, s.resource_id || s.error, s.resource_id ? "id" : "error");
    const actions = row.insertCell();
    if (s.operation_id) actions.append(button("watch", () => watch(s.operation_id)));
    if (s.status !== "canceled") actions.append(button("cancel", (b) => cancel(s, b)));
  }
  $("#subscriptions-more").hidden = !subscriptions.more;

  graphs = found.items;
  const table = $("#graphs tbody");
  const parents = $("#subgraph-parent");
  const chosen = parents.value;
  table.replaceChildren();
  parents.replaceChildren();
  for (const g of graphs) {
    const row = table.insertRow();
    cell(row, g.graph_id, "id");
    cell(row, g.name);
    cell(row, g.status, `status ${g.status}`);
    cell(row, g.tier);
    cell(row, size(g.size_bytes));
    cell(row, g.subgraphs.map((s) => s.name).join(", ") || "–");
    row.insertCell().append(button("open", () => openGraph(g.graph_id)));
    if (g.status === "active" && g.my_role === "admin") {
      parents.add(new Option(`${g.name} (${g.graph_id})`, g.graph_id));
    }
  }
  if (chosen) parents.value = chosen;
  $("#subgraph-form").hidden = parents.options.length === 0;
  $("#graphs-more").hidden = !found.more;
  showGraph();

  const ops = $("#operations tbody");
  ops.replaceChildren();
  for (const o of operations.items) {
    const row = ops.insertRow();
    row.dataset.operation = o.operation_id;
    cell(row, o.operation_id, "id");
    cell(row, o.kind);
    cell(row, o.status, `status ${o.status}`);
    cell(row, `${o.progress}%`);
    row.insertCell().append(button("watch", () => watch(o.operation_id)));
  }
  $("#operations-more").hidden = !operations.more;
  const running = operations.items.find((o) => o.status === "pending" || o.status === "running");
  if (running && (!watching || watching.id !== running.operation_id)) watch(running.operation_id);
  if (!watching && operations.items.length) show(operations.items[0]);
}

function cancel(subscription, control) {
  const id = subscription.subscription_id;
  if (!confirm(`Cancel ${id}? Its graph is suspended now and deleted after the grace.`)) return;
  act("#subscriptions-error", async () => {
    watch((await api(`/v1/subscriptions/${encodeURIComponent(id)}`, {method: "DELETE"}))
      .operation_id);
  }, control);
}

// The graph panel: its state, a query box, its members and its backups.

function openGraph(graphId) {
  open = graphId;
  pages.members = 1;
  pages.backups = 1;
  for (const part of ["#graph-error", "#query-error", "#members-error", "#backups-error"]) {
    $(part).textContent = "";
  }
  showAnswer(null);
  $("#query-target").replaceChildren();
  delete $("#query-target").dataset.ids;
  $("#graph").hidden = false;
  showGraph();
  act("#members-error", loadMembers);
  act("#backups-error", loadBackups);
  $("#graph").scrollIntoView();
}

const ROLE_SAYS = {
  writer: "You are a writer of this graph: your queries may write; its admins change its life, "
    + "members and backups.",
  reader: "You are a reader of this graph: your queries only read; its admins change its "
    + "life, members and backups.",
};

function isAdmin(graphId) {
  return graphs.find((each) => each.graph_id === graphId)?.my_role === "admin";
}

function showGraph() {
  const g = graphs.find((each) => each.graph_id === open);
  if (!g) return;
  $("#graph-name").textContent = g.name;
  $("#graph-id").textContent = g.graph_id;
  $("#graph-status").textContent = g.status;
  $("#graph-status").className = `status ${g.status}`;
  $("#graph-grace").textContent = g.status === "suspended"
    ? `Suspended: deleted after ${when(g.delete_after)}; restore it until then.` : "";
  // Only what the caller's role allows is offered (the API refuses the rest anyway).
  const admin = g.my_role === "admin";
  $("#graph-role").textContent = ROLE_SAYS[g.my_role] || "";
  $("#graph-delete").hidden = !admin || g.status !== "active";
  $("#graph-reactivate").hidden = !admin || g.status !== "suspended";
  $("#back-up").hidden = !admin;
  $("#member-form").hidden = !admin;
  const targets = $("#query-target");
  const ids = [g.graph_id, ...g.subgraphs.map((s) => s.graph_id)];
  if (targets.dataset.ids !== ids.join(" ")) { // rebuilt only when it changes: keeps a choice
    const chosen = targets.value;
    targets.replaceChildren(new Option(`${g.name} (${g.graph_id})`, g.graph_id),
      ...g.subgraphs.map((s) => new Option(`subgraph ${s.name} (${s.graph_id})`, s.graph_id)));
    if (ids.includes(chosen)) targets.value = chosen;
    targets.dataset.ids = ids.join(" ");
  }
}

function showAnswer(answer) {
  const head = $("#query-result thead");
  const body = $("#query-result tbody");
  head.replaceChildren();
  body.replaceChildren();
  const rows = answer?.row_count === 1 ? "row" : "rows";
  $("#query-count").textContent = answer
    ? `${answer.row_count} ${rows} in ${Number(answer.elapsed_ms).toFixed(1)} ms` : "";
  $("#query-truncated").hidden = !answer?.truncated;
  if (!answer) return;
  const names = head.insertRow();
  for (const column of answer.columns) {
    const th = document.createElement("th");
    th.textContent = column;
    names.append(th);
  }
  for (const values of answer.rows) {
    const row = body.insertRow();
    for (const value of values) {
      cell(row, text(value), value !== null && typeof value === "object" ? "value json" : "value");
    }
  }
}

function parameters() {
  const given = $("#query-parameters").value.trim();
  if (!given) return undefined;
  let parsed;
  try {
    parsed = JSON.parse(given);
  } catch {
    parsed = null;
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error('parameters: expected a JSON object, like {"name": "Acme"}');
  }
  return parsed;
}

async function loadMembers() {
  const graphId = open;
  const mine = ++loads.members;
  const {items, more} = await list(graphPath(graphId, "/members"), "members", pages.members);
  if (mine !== loads.members) return;
  const table = $("#members tbody");
  table.replaceChildren();
  const admin = isAdmin(graphId);
  for (const m of items) {
    const row = table.insertRow();
    cell(row, m.email);
    if (!admin) { // a member who is not an admin sees the members, and changes none
      cell(row, m.role);
      cell(row, when(m.added_at));
      row.insertCell();
      continue;
    }
    const role = document.createElement("select");
    role.setAttribute("aria-label", "role");
    role.append(...["admin", "writer", "reader"].map((name) => new Option(name, name)));
    role.value = m.role;
    role.addEventListener("change", () => act("#members-error", async () => {
      try {
        await post(graphPath(graphId, "/members"), {email: m.email, role: role.value});
      } finally {
        await refresh(); // my own role may be what changed: the panel offers what it allows
        await loadMembers(); // the role the server keeps, whether or not it changed
      }
    }, role));
    row.insertCell().append(role);
    cell(row, when(m.added_at));
    row.insertCell().append(button("remove", (b) => {
      if (!confirm(`Remove ${m.email} from ${graphId}?`)) return;
      act("#members-error", async () => {
        await api(graphPath(graphId, `/members/${encodeURIComponent(m.user_id)}`),
                  {method: "DELETE"});
        await loadMembers();
      }, b);
    }));
  }
  $("#members-more").hidden = !more;
}

async function loadBackups() {
  const graphId = open;
  const mine = ++loads.backups;
  const {items, more} = await list(graphPath(graphId, "/backups"), "backups", pages.backups);
  if (mine !== loads.backups) return;
  const table = $("#backups tbody");
  table.replaceChildren();
  for (const b of items) {
    const row = table.insertRow();
    cell(row, b.backup_id, "id");
    cell(row, b.kind);
    cell(row, when(b.created_at));
    cell(row, size(b.size_bytes));
    cell(row, when(b.expires_at));
    if (!isAdmin(graphId)) {
      row.insertCell();
      continue;
    }
    row.insertCell().append(button("restore", (control) => {
      if (!confirm(`Replace the data and schema of ${graphId} with backup ${b.backup_id}?`)) {
        return;
      }
      act("#backups-error", async () => {
        const path = `/backups/${encodeURIComponent(b.backup_id)}/restore`;
        watch((await post(graphPath(graphId, path))).operation_id);
      }, control);
    }));
  }
  $("#backups-more").hidden = !more;
}

// Following an operation.

function show(operation) {
  $("#watch").hidden = false;
  $("#watch-id").textContent = operation.operation_id;
  $("#watch-progress").value = operation.progress;
  $("#watch-percent").textContent = `${operation.progress}%`;
  $("#watch-status").textContent = operation.status;
  $("#watch-status").className = `status ${operation.status}`;
  $("#watch-message").textContent = operation.message || "";
  $("#watch-error").textContent = operation.error || "";
}

function watch(operationId) {
  if (watching) watching.source.close();
  const source = new EventSource(`/v1/operations/${encodeURIComponent(operationId)}/events`);
  watching = {id: operationId, source, live: true};
  show({operation_id: operationId, progress: 0, status: "pending", message: "connecting"});
  const onEvent = (event) => {
    const data = JSON.parse(event.data);
    show({operation_id: operationId, progress: data.progress, status: data.status,
          message: data.message, error: data.error});
    if (TERMINAL.has(event.type)) {
      source.close();
      if (watching && watching.source === source) watching.live = false;
      refresh().catch(report);
      if (open) act("#backups-error", loadBackups); // a backup or a restore may have ended
    }
  };
  for (const type of ["operation_started", "operation_progress", ...TERMINAL]) {
    source.addEventListener(type, onEvent);
  }
  // stream_error: the server asks us to come back; EventSource reconnects by itself with the
  // last id it saw, and after the end the server answers 204, which stops it.
  source.addEventListener("stream_error", () => {});
}

function report(error) {
  if (error.status === 401) return signedOut();
  $("#watch-error").textContent = error.message;
}

function signedOut() {
  clearInterval(timer);
  if (watching) watching.source.close();
  watching = null;
  open = null;
  $("#graph").hidden = true;
  $("#signed-in").hidden = true;
  $("#who").hidden = true;
  $("#sign-in").hidden = false;
}

async function signedIn(me) {
  $("#email").textContent = me.email;
  $("#who").hidden = false;
  $("#sign-in").hidden = true;
  $("#signed-in").hidden = false;
  await refresh();
  clearInterval(timer);
  timer = setInterval(() => refresh().catch(report), 2000);
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#sign-in-error").textContent = "";
  try {
    const me = await api("/v1/session", {method: "POST",
                                         body: JSON.stringify({api_key: $("#api-key").value})});
    $("#api-key").value = "";
    await signedIn(me);
  } catch (error) {
    $("#sign-in-error").textContent = error.message;
  }
});

$("#sign-out").addEventListener("click", async () => {
  await api("/v1/session", {method: "DELETE"});
  signedOut();
});

$("#subgraph-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#subgraph-error").textContent = "";
  const parent = $("#subgraph-parent").value;
  try {
    const made = await post(graphPath(parent, "/subgraphs"), {
      name: $("#subgraph-name").value, fork_parent: $("#subgraph-fork").checked});
    watch(made.operation_id);
  } catch (error) {
    $("#subgraph-error").textContent = error.message;
  }
});

for (const name of ["subscriptions", "graphs", "operations"]) {
  $(`#${name}-more`).addEventListener("click", () => {
    pages[name] += 1;
    refresh().catch(report);
  });
}
$("#members-more").addEventListener("click", () => {
  pages.members += 1;
  act("#members-error", loadMembers);
});
$("#backups-more").addEventListener("click", () => {
  pages.backups += 1;
  act("#backups-error", loadBackups);
});

$("#graph-delete").addEventListener("click", (event) => {
  const graphId = open;
  if (!confirm(`Delete ${graphId}? It is suspended now and deleted after the grace; until `
               + "then it can be restored.")) return;
  act("#graph-error", async () => {
    watch((await api(graphPath(graphId), {method: "DELETE"})).operation_id);
  }, event.currentTarget);
});

$("#graph-reactivate").addEventListener("click", (event) => act("#graph-error", async () => {
  watch((await post(graphPath(open, "/restore"))).operation_id);
}, event.currentTarget));

$("#back-up").addEventListener("click", (event) => act("#backups-error", async () => {
  watch((await post(graphPath(open, "/backups"))).operation_id);
}, event.currentTarget));

$("#query-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showAnswer(null);
  act("#query-error", async () => {
    const body = {query: $("#query-text").value};
    const given = parameters();
    if (given) body.parameters = given;
    showAnswer(await post(graphPath($("#query-target").value, "/query"), body));
  }, event.submitter);
});

$("#member-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const graphId = open;
  act("#members-error", async () => {
    await post(graphPath(graphId, "/members"),
               {email: $("#member-email").value, role: $("#member-role").value});
    $("#member-email").value = "";
    await loadMembers();
  }, event.submitter);
});

api("/v1/session").then((me) => (me.user_id ? signedIn(me) : signedOut())).catch(report);
