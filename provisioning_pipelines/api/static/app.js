// The operations page: plain modules, no build step. It talks to the same /v1 API as any client,
// authenticated by the session cookie that POST /v1/session sets (EventSource cannot send an
// Authorization header). Lists refresh every few seconds; a running operation is followed live.

const $ = (selector) => document.querySelector(selector);
const TERMINAL = new Set(["operation_completed", "operation_error", "operation_cancelled"]);
let watching = null; // {id, source, live}
let timer = null;
let latest = 0; // the newest refresh; an older one's answers arrive late and are dropped

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

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "–";
  if (className) td.className = className;
  return td;
}

function watchButton(row, operationId) {
  const td = row.insertCell();
  if (!operationId) return;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "watch";
  button.addEventListener("click", () => watch(operationId));
  td.append(button);
}

function size(bytes) {
  if (bytes == null) return "–";
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(0)} KiB`
    : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function refresh() {
  const mine = ++latest;
  const [subscriptions, graphs, operations] = await Promise.all([
    api("/v1/subscriptions"), api("/v1/graphs"), api("/v1/operations")]);
  if (mine !== latest) return;

  const subs = $("#subscriptions tbody");
  subs.replaceChildren();
  for (const s of subscriptions.subscriptions) {
    const row = subs.insertRow();
    cell(row, s.subscription_id, "id");
    cell(row, s.resource_type);
    cell(row, s.plan_name);
    cell(row, s.status, `status ${s.status}`);
    cell(row, s.resource_id || s.error, s.resource_id ? "id" : "error");
    watchButton(row, s.operation_id);
  }

  const table = $("#graphs tbody");
  const parents = $("#subgraph-parent");
  const chosen = parents.value;
  table.replaceChildren();
  parents.replaceChildren();
  for (const g of graphs.graphs) {
    const row = table.insertRow();
    cell(row, g.graph_id, "id");
    cell(row, g.name);
    cell(row, g.tier);
    cell(row, size(g.size_bytes));
    cell(row, g.subgraphs.map((s) => s.name).join(", ") || "–");
    parents.add(new Option(`${g.name} (${g.graph_id})`, g.graph_id));
  }
  if (chosen) parents.value = chosen;
  $("#subgraph-form").hidden = graphs.graphs.length === 0;

  const ops = $("#operations tbody");
  ops.replaceChildren();
  for (const o of operations.operations) {
    const row = ops.insertRow();
    row.dataset.operation = o.operation_id;
    cell(row, o.operation_id, "id");
    cell(row, o.kind);
    cell(row, o.status, `status ${o.status}`);
    cell(row, `${o.progress}%`);
    watchButton(row, o.operation_id);
  }
  const running = operations.operations.find((o) => o.status === "pending" || o.status === "running");
  if (running && (!watching || watching.id !== running.operation_id)) watch(running.operation_id);
  if (!watching && operations.operations.length) show(operations.operations[0]);
}

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
    const made = await api(`/v1/graphs/${encodeURIComponent(parent)}/subgraphs`, {
      method: "POST",
      body: JSON.stringify({name: $("#subgraph-name").value, fork_parent: $("#subgraph-fork").checked}),
    });
    watch(made.operation_id);
  } catch (error) {
    $("#subgraph-error").textContent = error.message;
  }
});

api("/v1/session").then((me) => (me.user_id ? signedIn(me) : signedOut())).catch(report);
