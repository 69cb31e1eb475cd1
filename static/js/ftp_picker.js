// Satchel FTP picker: one reusable dialog to pick a file on one of your FTP sites (attach
// mode) or a folder and a file name (save mode), browsing GET /api/v1/ftp/sites/{id}/list/.
//
//   const pick = await Satchel.ftpPicker.open({ mode: "attach" });   // {site, path, name, size} | null
//   const pick = await Satchel.ftpPicker.open({ mode: "save", filename: "a.pdf" }); // {site, path, name} | null
//   Satchel.ftpPicker.saveAttachment({ id, filename }, container);   // picker, then the job, shown in container
//
// Keyboard: ↑/↓ (Home/End, PageUp/PageDown) move, typing jumps to a name, Enter opens a folder
// or picks a file, Backspace goes up a folder, Esc closes. The last site and folder are
// remembered for next time.
(function () {
  "use strict";

  const { el, formatSize } = window.Satchel;

  const API = "/api/v1/";
  const MEMORY = "satchel.ftpPicker";
  const ICONS = {
    dir: "M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z",
    file: "M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8zM14 3v5h5",
    link: "M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1",
    up: "M12 19V5M5 12l7-7 7 7",
    close: "M18 6 6 18M6 6l12 12",
  };

  function icon(name) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", "fp-icon fp-icon-" + name);
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function api(path, options) {
    return window.Satchel.api(API + path, { ...options, quiet: true });
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });

  function formatDate(iso) {
    const date = iso ? new Date(iso) : null;
    return date && !isNaN(date) ? dateFormat.format(date) : "";
  }

  function join(directory, name) {
    return (directory.endsWith("/") ? directory : directory + "/") + name;
  }

  function parent(path) {
    const trimmed = path.replace(/\/+$/, "");
    const cut = trimmed.lastIndexOf("/");
    return cut <= 0 ? "/" : trimmed.slice(0, cut);
  }

  function remembered() {
    try {
      return JSON.parse(localStorage.getItem(MEMORY)) || {};
    } catch (error) {
      return {};
    }
  }

  // ---------------------------------------------------------------------------------------
  // The dialog (built once, on first use)
  // ---------------------------------------------------------------------------------------

  let ui = null;
  const state = { mode: "attach", site: null, path: "/", entries: [], active: -1, resolve: null, request: 0, typed: "", typedAt: 0 };

  function build() {
    const title = el("h2", { id: "fp-title" });
    const close = el("button", { type: "button", class: "fp-iconbtn", "aria-label": "Close", title: "Close (Esc)" }, icon("close"));
    const site = el("select", { class: "fp-site", "aria-label": "FTP site" });
    const up = el("button", { type: "button", class: "fp-iconbtn fp-up", "aria-label": "Up one folder", title: "Up one folder (Backspace)" }, icon("up"));
    const crumbs = el("nav", { class: "fp-crumbs", "aria-label": "Current folder" });
    const list = el("ul", { class: "fp-list", role: "listbox", tabindex: "0", "aria-labelledby": "fp-title" });
    const status = el("p", { class: "fp-status", role: "status" });
    const nameInput = el("input", { type: "text", class: "fp-name", id: "fp-name", autocomplete: "off", spellcheck: "false" });
    const nameRow = el("div", { class: "fp-name-row" }, el("label", { for: "fp-name", text: "File name" }), nameInput);
    const hint = el("span", { class: "fp-hint", text: "↑↓ move · Enter open · Backspace up · Esc close" });
    const cancel = el("button", { type: "button", class: "fp-cancel", text: "Cancel" });
    const ok = el("button", { type: "button", class: "primary fp-ok" });
    const dialog = el(
      "dialog",
      { class: "ftp-picker", "aria-labelledby": "fp-title" },
      el("header", { class: "fp-head" }, title, close),
      el("div", { class: "fp-bar" }, site, up, crumbs),
      list,
      status,
      nameRow,
      el("footer", { class: "fp-foot" }, hint, el("span", { class: "fp-grow" }), cancel, ok)
    );
    document.body.append(dialog);

    close.addEventListener("click", () => finish(null));
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("close", () => finish(null));
    site.addEventListener("change", () => {
      state.site = Number(site.value);
      load(null);
    });
    up.addEventListener("click", goUp);
    ok.addEventListener("click", confirm);
    list.addEventListener("keydown", onListKey);
    list.addEventListener("click", (event) => {
      const item = event.target.closest("[role=option]");
      if (item) setActive(Number(item.dataset.index));
    });
    list.addEventListener("dblclick", (event) => {
      const item = event.target.closest("[role=option]");
      if (item) choose(Number(item.dataset.index));
    });
    nameInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        confirm();
      } else if (event.key === "ArrowUp" || event.key === "ArrowDown") {
        event.preventDefault();
        list.focus();
      }
    });
    nameInput.addEventListener("input", updateOk);
    crumbs.addEventListener("click", (event) => {
      const crumb = event.target.closest("[data-path]");
      if (crumb) load(crumb.dataset.path);
    });
    return { dialog, title, site, up, crumbs, list, status, nameRow, nameInput, ok };
  }

  function setStatus(text, kind) {
    ui.status.textContent = text || "";
    ui.status.className = "fp-status" + (kind ? " " + kind : "");
    ui.status.hidden = !text;
  }

  function renderCrumbs() {
    const parts = state.path.split("/").filter(Boolean);
    const crumbs = [el("button", { type: "button", class: "fp-crumb", "data-path": "/", "aria-label": "Top folder", text: "/" })];
    parts.forEach((part, index) => {
      const path = "/" + parts.slice(0, index + 1).join("/");
      if (index) crumbs.push(el("span", { class: "fp-sep", "aria-hidden": "true", text: "/" }));
      const last = index === parts.length - 1;
      crumbs.push(el("button", { type: "button", class: "fp-crumb", "data-path": path, "aria-current": last ? "location" : null, text: part }));
    });
    ui.crumbs.replaceChildren(...crumbs);
    ui.crumbs.scrollLeft = ui.crumbs.scrollWidth;
    ui.up.disabled = state.path === "/";
  }

  function renderList() {
    const items = state.entries.map((entry, index) => {
      const kind = entry.type === "dir" ? "dir" : entry.type === "link" ? "link" : "file";
      return el(
        "li",
        { role: "option", id: `fp-option-${index}`, class: `fp-entry fp-${kind}`, "data-index": String(index), "aria-selected": "false" },
        icon(kind),
        el("span", { class: "fp-entry-name", text: entry.name, title: entry.name }),
        el("span", { class: "fp-entry-size", text: kind === "dir" ? "" : formatSize(entry.size) }),
        el("time", { class: "fp-entry-date", text: formatDate(entry.modified) })
      );
    });
    ui.list.replaceChildren(...items);
    state.typed = "";
    if (!state.entries.length) setStatus("This folder is empty.", "empty");
    // Saving: nothing highlighted, so Enter saves here and no file looks chosen for replacing.
    setActive(state.entries.length && state.mode === "attach" ? 0 : -1);
  }

  // The name the server will give the file, as mailcore/ftp_bridge.free_name does: an
  // existing file is never replaced.
  function freeName(name) {
    const taken = new Set(state.entries.map((entry) => entry.name.toLowerCase()));
    if (!taken.has(name.toLowerCase())) return name;
    let dot = name.lastIndexOf(".");
    if (dot > 0 && name.slice(0, dot).toLowerCase().endsWith(".tar")) dot -= 4;
    const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
    let number = 1;
    while (taken.has(`${stem} (${number})${ext}`.toLowerCase())) number += 1;
    return `${stem} (${number})${ext}`;
  }

  function setActive(index) {
    const previous = ui.list.querySelector("[aria-selected=true]");
    if (previous) previous.setAttribute("aria-selected", "false");
    state.active = index;
    if (index < 0) {
      ui.list.removeAttribute("aria-activedescendant");
      updateOk();
      return;
    }
    const item = ui.list.children[index];
    item.setAttribute("aria-selected", "true");
    ui.list.setAttribute("aria-activedescendant", item.id);
    item.scrollIntoView({ block: "nearest" });
    updateOk();
  }

  function activeEntry() {
    return state.active >= 0 ? state.entries[state.active] : null;
  }

  function updateOk() {
    if (state.mode === "attach") {
      const entry = activeEntry();
      ui.ok.disabled = !entry || entry.type === "dir";
    } else {
      const name = ui.nameInput.value.trim();
      ui.ok.disabled = !state.site || !name || name.includes("/") || name === "." || name === "..";
      const existing = state.entries.find((entry) => entry.name.toLowerCase() === name.toLowerCase());
      if (existing && existing.type === "dir") setStatus(`“${existing.name}” is a folder: the file will be saved inside it.`, "note");
      else if (existing && !ui.ok.disabled) setStatus(`“${existing.name}” is already here and stays as it is: this one will be saved as “${freeName(name)}”.`, "note");
      else if (ui.status.classList.contains("note")) setStatus("");
    }
  }

  // `fallback`: a remembered folder that is gone opens the site's initial folder instead.
  async function load(path, { fallback = false } = {}) {
    const request = ++state.request;
    setStatus("Loading…", "loading");
    ui.list.setAttribute("aria-busy", "true");
    const query = path === null ? "" : `?path=${encodeURIComponent(path)}`;
    let listing;
    try {
      listing = await api(`ftp/sites/${state.site}/list/${query}`);
    } catch (error) {
      if (request !== state.request) return;
      if (fallback) return load(null);
      ui.list.removeAttribute("aria-busy");
      state.entries = [];
      ui.list.replaceChildren();
      setActive(-1);
      setStatus(error.message, "error");
      renderCrumbs();
      return;
    }
    if (request !== state.request) return;
    ui.list.removeAttribute("aria-busy");
    setStatus("");
    state.path = listing.path;
    state.entries = listing.entries;
    renderCrumbs();
    renderList();
  }

  function goUp() {
    if (state.path !== "/") load(parent(state.path));
  }

  function choose(index) {
    const entry = state.entries[index];
    if (!entry) return;
    // A link is taken for a folder when saving, for a file when attaching.
    if (entry.type === "dir" || (entry.type === "link" && state.mode === "save")) {
      load(join(state.path, entry.name));
      return;
    }
    if (state.mode === "attach") pick(entry);
    else {
      ui.nameInput.value = entry.name;
      ui.nameInput.focus();
      ui.nameInput.select();
      updateOk();
    }
  }

  function pick(entry) {
    finish({ site: state.site, path: join(state.path, entry.name), name: entry.name, size: entry.size });
  }

  function confirm() {
    updateOk();
    if (ui.ok.disabled) return;
    if (state.mode === "attach") pick(activeEntry());
    else {
      const name = ui.nameInput.value.trim();
      finish({ site: state.site, path: join(state.path, name), name, directory: state.path });
    }
  }

  function onListKey(event) {
    const count = state.entries.length;
    const move = (index) => {
      event.preventDefault();
      if (count) setActive(Math.max(0, Math.min(count - 1, index)));
    };
    const page = Math.max(1, Math.floor(ui.list.clientHeight / 36) - 1);
    switch (event.key) {
      case "ArrowDown":
        return move(state.active + 1);
      case "ArrowUp":
        return move(state.active - 1);
      case "Home":
        return move(0);
      case "End":
        return move(count - 1);
      case "PageDown":
        return move(state.active + page);
      case "PageUp":
        return move(state.active - page);
      case "Enter":
        event.preventDefault();
        if (state.active >= 0) choose(state.active);
        else if (state.mode === "save") confirm();
        return;
      case "Backspace":
      case "ArrowLeft":
        event.preventDefault();
        goUp();
        return;
      case "ArrowRight":
        if (activeEntry() && activeEntry().type === "dir") {
          event.preventDefault();
          choose(state.active);
        }
        return;
      default:
        typeAhead(event);
    }
  }

  // Typing a name's first letters jumps to it (as in a file manager).
  function typeAhead(event) {
    if (event.key.length !== 1 || event.ctrlKey || event.metaKey || event.altKey) return;
    const now = Date.now();
    state.typed = (now - state.typedAt > 800 ? "" : state.typed) + event.key.toLowerCase();
    state.typedAt = now;
    const count = state.entries.length;
    const start = state.typed.length === 1 ? state.active + 1 : state.active;
    for (let step = 0; step < count; step += 1) {
      const index = (Math.max(0, start) + step) % count;
      if (state.entries[index].name.toLowerCase().startsWith(state.typed)) {
        event.preventDefault();
        setActive(index);
        return;
      }
    }
  }

  function finish(result) {
    if (!state.resolve) return;
    const resolve = state.resolve;
    state.resolve = null;
    state.request += 1;
    if (result) localStorage.setItem(MEMORY, JSON.stringify({ site: state.site, path: state.path }));
    if (ui.dialog.open) ui.dialog.close();
    resolve(result);
  }

  async function open({ mode = "attach", filename = "", title = "" } = {}) {
    if (!ui) ui = build();
    if (state.resolve) finish(null);
    state.mode = mode;
    ui.dialog.dataset.mode = mode;
    ui.title.textContent = title || (mode === "attach" ? "Attach a file from FTP" : "Save to FTP");
    ui.ok.textContent = mode === "attach" ? "Attach" : "Save here";
    ui.nameRow.hidden = mode !== "save";
    ui.nameInput.value = filename;
    state.entries = [];
    ui.list.replaceChildren();
    ui.crumbs.replaceChildren();
    setActive(-1);
    const result = new Promise((resolve) => {
      state.resolve = resolve;
    });
    ui.dialog.showModal();
    setStatus("Loading your FTP sites…", "loading");
    let sites;
    try {
      sites = (await api("ftp/sites/?page_size=500")).results;
    } catch (error) {
      setStatus(error.message, "error");
      return result;
    }
    if (!sites.length) {
      ui.site.replaceChildren();
      ui.site.disabled = true;
      setStatus("", "");
      ui.status.replaceChildren("No FTP sites yet. ", el("a", { href: "/files/sites/add/", text: "Add an FTP site" }), " first.");
      ui.status.className = "fp-status empty";
      ui.status.hidden = false;
      return result;
    }
    ui.site.disabled = false;
    ui.site.replaceChildren(...sites.map((site) => el("option", { value: String(site.id), text: `${site.name} (${site.host})` })));
    const memory = remembered();
    const known = sites.some((site) => site.id === memory.site);
    state.site = known ? memory.site : sites[0].id;
    ui.site.value = String(state.site);
    ui.list.focus();
    load(known ? memory.path : null, { fallback: known });
    return result;
  }

  // ---------------------------------------------------------------------------------------
  // Save an attachment: the picker, then the job, shown live in `container`
  // ---------------------------------------------------------------------------------------

  const FINISHED = ["done", "failed", "cancelled"];

  async function saveAttachment(attachment, container) {
    const name = attachment.filename || "attachment";
    const pick = await open({ mode: "save", filename: name, title: `Save “${name}” to FTP` });
    if (!pick) return null;
    const bar = el("span");
    const progress = el("span", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", "aria-label": `Saving ${name}` }, bar);
    const badge = el("span", { class: "state queued", text: "queued" });
    const note = el("span", { class: "fp-job-note", text: `${name} → ${pick.path}` });
    const row = el("div", { class: "fp-job", role: "status", "data-attachment": String(attachment.id) }, progress, badge, note);
    container.querySelectorAll(`.fp-job[data-attachment="${attachment.id}"]`).forEach((old) => old.remove());
    container.append(row);

    let job = null;
    let finished = false;
    const early = new Map(); // events that arrive before the POST answers
    function apply(update) {
      if (finished) return;
      const percent = update.total ? Math.round((100 * update.done) / update.total) : update.state === "done" ? 100 : 0;
      bar.style.width = `${percent}%`;
      progress.setAttribute("aria-valuenow", String(percent));
      badge.textContent = update.state;
      badge.className = "state " + update.state;
      if (!FINISHED.includes(update.state)) return;
      finished = true;
      bar.style.transition = "none";
      document.removeEventListener("satchel:job.progress", onEvent);
      row.dataset.state = update.state;
      if (update.state === "done") {
        const path = update.result && update.result.path;
        note.textContent = path === pick.path ? `${name} saved to ${path}` : `${name} saved as ${path} (the name was taken)`;
      } else note.textContent = `${name}: ${update.error || `the job was ${update.state}.`}`;
    }
    function onEvent(event) {
      const update = event.detail.job;
      if (job && update.id === job.id) apply(update);
      else if (!job) early.set(update.id, update);
    }
    document.addEventListener("satchel:job.progress", onEvent);
    try {
      job = (await api(`mail/attachments/${attachment.id}/save-to-ftp/`, { method: "POST", body: { site: pick.site, path: pick.path } })).job;
    } catch (failure) {
      document.removeEventListener("satchel:job.progress", onEvent);
      apply({ state: "failed", error: failure.message, done: 0, total: 0 });
      return null;
    }
    row.dataset.jobId = String(job.id);
    apply(early.get(job.id) || job);
    // Live events carry the progress; a slow poll covers a dropped WebSocket.
    const poll = async () => {
      if (finished || !row.isConnected) return;
      try {
        apply(await api(`jobs/${job.id}/`));
      } catch (error) {
        return;
      }
      setTimeout(poll, 5000);
    };
    setTimeout(poll, 5000);
    return job;
  }

  window.Satchel = Object.assign(window.Satchel || {}, { ftpPicker: { open, saveAttachment } });
})();
