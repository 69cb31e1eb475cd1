// Satchel live events: one WebSocket per tab to /ws/events/, reconnecting with backoff.
// Every event is re-dispatched on `document` as `satchel:event` (and `satchel:<type>`),
// and job progress updates any element marked with data-job-id.
(function () {
  "use strict";

  const KIND_LABELS = { connectivity_check: "Connectivity check", mail_sync: "Mail sync", attachment_save_to_ftp: "Save to FTP" };
  const FINISHED = new Set(["done", "failed", "cancelled"]);
  // The latest state of each job heard of, for rows that arrive after their events (a job
  // can finish before the htmx response that inserts its row has reached the page).
  const latestJobs = new Map();
  let retryDelay = 1000;

  function setConnectionState(state) {
    document.querySelectorAll(".connection").forEach((dot) => {
      dot.dataset.state = state;
      dot.title = state === "open" ? "Live updates on" : "Live updates reconnecting…";
    });
  }

  function toast(text, variant) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "toast" + (variant ? " " + variant : "");
    item.setAttribute("role", "status");
    item.textContent = text;
    box.appendChild(item);
    setTimeout(() => item.remove(), 6000);
  }

  function renderChecks(list, checks) {
    list.replaceChildren(
      ...checks.map((check) => {
        const li = document.createElement("li");
        li.className = check.ok ? "" : "bad";
        li.textContent = `${check.name}: ${check.detail}`;
        return li;
      })
    );
  }

  function applyJob(row, job) {
    const bar = row.querySelector(".progress > span");
    if (bar) {
      const percent = job.total ? Math.round((100 * job.done) / job.total) : job.state === "done" ? 100 : 0;
      bar.style.width = percent + "%";
      bar.parentElement.setAttribute("aria-valuenow", String(percent));
    }
    const state = row.querySelector("[data-field=state]");
    if (state) {
      state.textContent = job.state;
      state.className = "state " + job.state;
    }
    const count = row.querySelector("[data-field=count]");
    if (count) count.textContent = `${job.done} / ${job.total ?? "?"} ${job.unit}`;
    const error = row.querySelector("[data-field=error]");
    if (error) error.textContent = job.error;
    const checks = row.querySelector("[data-field=checks]");
    if (checks && job.result && job.result.checks) renderChecks(checks, job.result.checks);
  }

  function updateJob(job) {
    latestJobs.set(String(job.id), job);
    document.querySelectorAll(`[data-job-id="${job.id}"]`).forEach((row) => applyJob(row, job));
    if (FINISHED.has(job.state)) {
      const label = KIND_LABELS[job.kind] || job.kind;
      const text = job.state === "done" ? `${label} finished.` : `${label} ${job.state}: ${job.error}`;
      toast(text, job.state === "done" ? "" : "failed");
    }
  }

  function handle(event) {
    document.dispatchEvent(new CustomEvent("satchel:event", { detail: event }));
    document.dispatchEvent(new CustomEvent("satchel:" + event.type, { detail: event }));
    if (event.type === "job.progress") updateJob(event.job);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/events/`);
    socket.addEventListener("open", () => {
      retryDelay = 1000;
      setConnectionState("open");
    });
    socket.addEventListener("message", (message) => handle(JSON.parse(message.data)));
    socket.addEventListener("close", () => {
      setConnectionState("closed");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  document.addEventListener("htmx:load", (event) => {
    const rows = [event.detail.elt, ...event.detail.elt.querySelectorAll("[data-job-id]")];
    rows.forEach((row) => {
      const job = row.dataset && latestJobs.get(row.dataset.jobId);
      if (job) applyJob(row, job);
    });
  });

  window.Satchel = Object.assign(window.Satchel || {}, { toast });
  if (document.body.dataset.authenticated === "true") connect();
})();
