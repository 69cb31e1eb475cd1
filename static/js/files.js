// Satchel files: the FTP site form's port default, and the file browser (/files/).
// The browser talks to the REST API (/api/v1/ftp/sites/{id}/...) with the session cookie and
// the CSRF header. Nothing from the server is ever inserted as HTML: textContent only.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ The site form
  function siteForm(form) {
    const ports = JSON.parse($("ftp-ports").textContent);
    const security = form.querySelector("[name=security]");
    const port = form.querySelector("[name=port]");
    if (!security || !port) return;
    let last = ports[security.value];
    security.addEventListener("change", () => {
      const next = ports[security.value];
      if (!port.value || Number(port.value) === last) port.value = next;
      last = next;
    });
  }

  // ------------------------------------------------------------------ The browser
  function browser(app) {
    const data = JSON.parse($("files-data").textContent);
    const { ApiError, csrfToken } = window.Satchel;
    const ROW_H = 36; // keep in step with files.css (.file-row height)
    const OVERSCAN = 40;
    const MAX_ROWS = 300;
    const PREVIEW_BYTES = 256 * 1024;
    const IMAGE_TYPES = {
      png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp",
      svg: "image/svg+xml", bmp: "image/bmp", ico: "image/x-icon", avif: "image/avif",
    };
    const DRAG_TYPE = "application/x-satchel-files";

    const state = {
      site: data.site,
      path: "",
      entries: [],
      view: [],
      sort: { key: "name", dir: 1 },
      filter: "",
      cursor: -1,
      selected: new Set(),
      anchor: -1,
      loading: 0,
      preview: null, // {entry, text, complete}
      rendered: [-1, -1],
    };

    const scroll = $("file-scroll");
    const tbody = $("file-rows");
    const table = $("file-table");
    const filterInput = $("filter");
    const dialog = $("dialog");

    function toast(text, variant) {
      if (window.Satchel && window.Satchel.toast) window.Satchel.toast(text, variant);
    }

    // ---------------------------------------------------------------- API
    function siteUrl(action) {
      return `${data.api}${state.site}/${action}/`;
    }
    function downloadUrl(path) {
      return `${siteUrl("download")}?path=${encodeURIComponent(path)}`;
    }

    // The shared client (static/js/api.js), against this site's endpoints.
    function api(action, { params, ...options } = {}) {
      const query = params ? "?" + new URLSearchParams(params).toString() : "";
      return window.Satchel.api(siteUrl(action) + query, options);
    }

    // ---------------------------------------------------------------- Helpers
    function join(dir, name) {
      return (dir.endsWith("/") ? dir : dir + "/") + name;
    }
    function parent(path) {
      if (path === "/" || !path) return "/";
      const cut = path.replace(/\/+$/, "").lastIndexOf("/");
      return cut <= 0 ? "/" : path.slice(0, cut);
    }
    function basename(path) {
      return path.replace(/\/+$/, "").split("/").pop();
    }
    function extension(name) {
      const dot = name.lastIndexOf(".");
      return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
    }
    function humanSize(bytes) {
      if (bytes === null || bytes === undefined) return "";
      if (bytes < 1024) return `${bytes} B`;
      const units = ["KB", "MB", "GB", "TB"];
      let value = bytes / 1024;
      let unit = 0;
      while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit += 1;
      }
      return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
    }
    const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
    function humanDate(value) {
      if (!value) return "";
      const date = new Date(value);
      return Number.isNaN(date.getTime()) ? "" : dateFormat.format(date);
    }
    function modeFromPermissions(text) {
      if (!text) return null;
      if (/^0?[0-7]{3,4}$/.test(text)) return parseInt(text, 8);
      const match = /([r-][w-][xsStT-])([r-][w-][xsStT-])([r-][w-][xsStT-])$/.exec(text);
      if (!match) return null;
      let mode = 0;
      const bits = match.slice(1).join("");
      for (let i = 0; i < 9; i += 1) {
        const on = bits[i] !== "-" && bits[i] !== "S" && bits[i] !== "T";
        if (on) mode |= 1 << (8 - i);
      }
      return mode;
    }
    function svgIcon(kind) {
      const ns = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", "0 0 24 24");
      svg.setAttribute("class", `icon kind-${kind}`);
      svg.setAttribute("aria-hidden", "true");
      const paths = {
        dir: ["M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"],
        file: ["M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8z", "M14 3v5h5"],
        link: ["M10 14a5 5 0 0 0 7 0l3-3a5 5 0 0 0-7-7l-1 1", "M14 10a5 5 0 0 0-7 0l-3 3a5 5 0 0 0 7 7l1-1"],
        home: ["M3 10.5 12 3l9 7.5", "M5 9v11h14V9"],
        image: ["M5 3h14a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z", "m21 15-5-5L5 21"],
      };
      (paths[kind] || paths.file).forEach((d) => {
        const path = document.createElementNS(ns, "path");
        path.setAttribute("d", d);
        svg.appendChild(path);
      });
      return svg;
    }

    // ---------------------------------------------------------------- Listing
    function setVisible(id) {
      ["folder-empty", "folder-loading", "folder-error"].forEach((name) => {
        $(name).hidden = name !== id;
      });
    }

    async function navigate(path, { push = true, select = null } = {}) {
      const ticket = ++state.loading;
      setVisible("folder-loading");
      let listing;
      try {
        listing = await api("list", { params: path ? { path } : {} });
      } catch (error) {
        if (ticket !== state.loading) return false;
        if (state.path) {
          setVisible(state.entries.length ? null : "folder-empty");
        } else {
          const box = $("folder-error");
          const heading = document.createElement("h2");
          heading.textContent = "Could not open this folder";
          const text = document.createElement("p");
          text.className = "muted";
          text.textContent = error.message;
          const edit = document.createElement("a");
          edit.className = "button";
          edit.href = data.edit_url.replace("{id}", state.site);
          edit.textContent = "Edit the site";
          box.replaceChildren(heading, text, edit);
          setVisible("folder-error");
        }
        return false;
      }
      if (ticket !== state.loading) return false;
      const changed = listing.path !== state.path;
      state.path = listing.path;
      state.entries = listing.entries;
      if (changed) {
        state.filter = "";
        filterInput.value = "";
        state.selected.clear();
        state.cursor = -1;
        scroll.scrollTop = 0;
      }
      const url = `${data.page}?site=${state.site}&path=${encodeURIComponent(state.path)}`;
      if (push && changed) history.pushState({ site: state.site, path: state.path }, "", url);
      else history.replaceState({ site: state.site, path: state.path }, "", url);
      renderBreadcrumbs();
      applyView({ keep: !changed, select });
      document.title = `${basename(state.path) || siteName()} · Files · Satchel`;
      return true;
    }

    function refresh(select) {
      return navigate(state.path, { push: false, select });
    }

    function siteName() {
      const site = data.sites.find((item) => item.id === state.site);
      return site ? site.name : "Site";
    }

    function compare(a, b) {
      if ((a.type === "dir") !== (b.type === "dir")) return a.type === "dir" ? -1 : 1;
      const key = state.sort.key;
      // Folders have no size: by size, they stay in name order at the top.
      if (key === "size" && a.type === "dir") return collator.compare(a.name, b.name);
      let result = 0;
      if (key === "size") result = (a.size ?? -1) - (b.size ?? -1);
      else if (key === "modified") result = (Date.parse(a.modified) || 0) - (Date.parse(b.modified) || 0);
      else if (key === "permissions") result = (a.permissions || "").localeCompare(b.permissions || "");
      if (result === 0) result = collator.compare(a.name, b.name);
      return result * state.sort.dir;
    }
    const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

    function applyView({ keep = true, select = null } = {}) {
      const selectedNames = keep ? new Set(state.selected) : new Set();
      const cursorName = keep && state.view[state.cursor] ? state.view[state.cursor].name : null;
      const needle = state.filter.toLowerCase();
      state.view = state.entries.filter((entry) => !needle || entry.name.toLowerCase().includes(needle));
      state.view.sort(compare);
      state.selected = new Set([...selectedNames].filter((name) => state.view.some((e) => e.name === name)));
      state.cursor = -1;
      const wanted = select || cursorName;
      if (wanted) state.cursor = state.view.findIndex((entry) => entry.name === wanted);
      if (select && state.cursor >= 0) {
        state.selected = new Set([select]);
        state.anchor = state.cursor;
      }
      table.setAttribute("aria-rowcount", String(state.view.length + 1));
      table.querySelectorAll("thead th").forEach((th) => {
        const key = th.querySelector("button").dataset.sort;
        if (key === state.sort.key) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
        else th.removeAttribute("aria-sort");
      });
      setVisible(state.entries.length ? null : "folder-empty");
      state.rendered = [-1, -1];
      renderRows(true);
      if (state.cursor >= 0) ensureVisible(state.cursor);
      updateActions();
    }

    function renderBreadcrumbs() {
      const nav = $("breadcrumbs");
      const parts = state.path.split("/").filter(Boolean);
      const items = [];
      const root = crumb("/", "/");
      root.classList.add("root");
      root.title = `Top folder of ${siteName()}`;
      root.setAttribute("aria-label", `Top folder of ${siteName()}`);
      root.replaceChildren(svgIcon("home"));
      items.push(root);
      let acc = "";
      parts.forEach((part) => {
        acc += "/" + part;
        const sep = document.createElement("span");
        sep.className = "crumb-sep";
        sep.setAttribute("aria-hidden", "true");
        sep.textContent = "/";
        items.push(sep, crumb(acc, part));
      });
      const last = items[items.length - 1];
      last.setAttribute("aria-current", "location");
      nav.replaceChildren(...items);
    }
    function crumb(path, label) {
      const link = document.createElement("a");
      link.className = "crumb";
      link.href = `${data.page}?site=${state.site}&path=${encodeURIComponent(path)}`;
      link.dataset.path = path;
      link.textContent = label;
      link.addEventListener("click", (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
        event.preventDefault();
        const from = state.path;
        navigate(path, { select: from.startsWith(path) && from !== path ? from.slice(path.length).replace(/^\//, "").split("/")[0] : null });
      });
      dropTarget(link, () => path);
      return link;
    }

    // Windowed rendering: only the rows near the viewport exist in the DOM, between two
    // spacer rows; a directory of 10,000+ entries scrolls as fast as one of ten.
    function renderRows(force) {
      const total = state.view.length;
      const top = Math.max(0, scroll.scrollTop - (table.tHead ? table.tHead.offsetHeight : 0));
      const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
      const visible = Math.ceil(scroll.clientHeight / ROW_H) + 2 * OVERSCAN;
      const last = Math.min(total, first + Math.min(MAX_ROWS, visible));
      const [from, to] = state.rendered;
      if (!force && from >= 0 && first >= from && last <= to) return;
      const margin = Math.floor(OVERSCAN / 2);
      const start = Math.max(0, first - (force ? 0 : margin));
      const end = Math.min(total, Math.max(last, start + Math.min(MAX_ROWS, visible)));
      state.rendered = [start, end];
      const rows = [];
      if (start > 0) rows.push(spacer(start * ROW_H));
      for (let i = start; i < end; i += 1) rows.push(rowFor(i));
      if (end < total) rows.push(spacer((total - end) * ROW_H));
      tbody.replaceChildren(...rows);
    }
    function spacer(height) {
      const tr = document.createElement("tr");
      tr.className = "spacer";
      tr.setAttribute("aria-hidden", "true");
      const td = document.createElement("td");
      td.colSpan = 4;
      td.style.height = `${height}px`;
      tr.appendChild(td);
      return tr;
    }
    function rowFor(index) {
      const entry = state.view[index];
      const tr = document.createElement("tr");
      tr.className = `file-row type-${entry.type}`;
      tr.dataset.index = String(index);
      tr.dataset.name = entry.name;
      tr.setAttribute("aria-rowindex", String(index + 2));
      tr.setAttribute("aria-selected", state.selected.has(entry.name) ? "true" : "false");
      if (index === state.cursor) tr.classList.add("cursor");
      tr.draggable = true;

      const name = document.createElement("td");
      name.className = "col-name";
      const kind = entry.type === "dir" ? "dir" : entry.type === "link" ? "link" : IMAGE_TYPES[extension(entry.name)] ? "image" : "file";
      name.appendChild(svgIcon(kind));
      const link = document.createElement("a");
      link.className = "file-name";
      link.textContent = entry.name;
      link.tabIndex = -1;
      const path = join(state.path, entry.name);
      if (entry.type === "file") {
        link.href = downloadUrl(path);
        link.setAttribute("download", entry.name);
      } else {
        link.href = `${data.page}?site=${state.site}&path=${encodeURIComponent(path)}`;
      }
      name.appendChild(link);
      if (entry.type === "link" && entry.target) {
        const target = document.createElement("span");
        target.className = "muted small link-target";
        target.textContent = ` → ${entry.target}`;
        name.appendChild(target);
      }
      const size = document.createElement("td");
      size.className = "col-size";
      size.textContent = entry.type === "dir" ? "" : humanSize(entry.size);
      if (entry.size !== null && entry.type !== "dir") size.title = `${entry.size.toLocaleString()} bytes`;
      const modified = document.createElement("td");
      modified.className = "col-modified";
      modified.textContent = humanDate(entry.modified);
      const perms = document.createElement("td");
      perms.className = "col-perms mono";
      perms.textContent = entry.permissions || "";
      tr.append(name, size, modified, perms);
      if (entry.type !== "file") dropTarget(tr, () => path);
      return tr;
    }

    function syncRowStates() {
      tbody.querySelectorAll("tr.file-row").forEach((tr) => {
        const index = Number(tr.dataset.index);
        tr.setAttribute("aria-selected", state.selected.has(tr.dataset.name) ? "true" : "false");
        tr.classList.toggle("cursor", index === state.cursor);
      });
      updateActions();
    }

    function ensureVisible(index) {
      const head = table.tHead ? table.tHead.offsetHeight : 0;
      const rowTop = head + index * ROW_H;
      const viewTop = scroll.scrollTop + head;
      const viewBottom = scroll.scrollTop + scroll.clientHeight;
      if (rowTop < viewTop) scroll.scrollTop = rowTop - head;
      else if (rowTop + ROW_H > viewBottom) scroll.scrollTop = rowTop + ROW_H - scroll.clientHeight;
      renderRows(false);
    }

    function selectedEntries() {
      return state.view.filter((entry) => state.selected.has(entry.name));
    }
    function current() {
      return state.view[state.cursor] || null;
    }

    function updateActions() {
      const chosen = selectedEntries();
      app.querySelectorAll(".needs-one").forEach((b) => (b.disabled = chosen.length !== 1));
      app.querySelectorAll(".needs-some").forEach((b) => (b.disabled = chosen.length === 0));
      app.querySelectorAll(".needs-file").forEach((b) => (b.disabled = !(chosen.length === 1 && chosen[0].type === "file")));
      $("go-up").disabled = state.path === "/";
      const total = state.entries.length;
      const shown = state.view.length;
      let text = shown === total ? `${total} item${total === 1 ? "" : "s"}` : `${shown} of ${total} shown`;
      if (chosen.length) text += ` · ${chosen.length} selected`;
      $("status").textContent = text;
      if (state.preview && chosen.length === 1 && chosen[0].type === "file" && chosen[0].name !== state.preview.entry.name && !state.preview.editing) {
        schedulePreview(chosen[0]);
      }
    }

    function moveCursor(index, { extend = false, toggle = false } = {}) {
      if (!state.view.length) return;
      index = Math.max(0, Math.min(state.view.length - 1, index));
      state.cursor = index;
      if (extend && state.anchor >= 0) {
        const [a, b] = [Math.min(state.anchor, index), Math.max(state.anchor, index)];
        state.selected = new Set(state.view.slice(a, b + 1).map((e) => e.name));
      } else if (toggle) {
        const name = state.view[index].name;
        if (state.selected.has(name)) state.selected.delete(name);
        else state.selected.add(name);
        state.anchor = index;
      } else {
        state.selected = new Set([state.view[index].name]);
        state.anchor = index;
      }
      ensureVisible(index);
      syncRowStates();
    }

    function open(entry) {
      if (!entry) return;
      const path = join(state.path, entry.name);
      if (entry.type === "file") {
        const link = document.createElement("a");
        link.href = downloadUrl(path);
        link.download = entry.name;
        document.body.appendChild(link);
        link.click();
        link.remove();
      } else {
        navigate(path);
      }
    }

    function goUp() {
      if (state.path === "/") return;
      navigate(parent(state.path), { select: basename(state.path) });
    }

    // ---------------------------------------------------------------- Dialogs
    let dialogResolve = null;
    function showDialog({ title, text = "", input = null, chmod = null, ok = "OK", danger = false }) {
      $("dialog-title").textContent = title;
      $("dialog-text").textContent = text;
      $("dialog-text").hidden = !text;
      $("dialog-input-wrap").hidden = input === null;
      $("dialog-chmod").hidden = chmod === null;
      const okButton = $("dialog-ok");
      okButton.textContent = ok;
      okButton.className = danger ? "danger-solid" : "primary";
      if (input !== null) {
        $("dialog-label").textContent = input.label;
        $("dialog-input").value = input.value;
      }
      if (chmod !== null) setChmod(chmod);
      dialog.returnValue = "";
      dialog.showModal();
      if (input !== null) {
        const field = $("dialog-input");
        field.focus();
        const end = input.selectEnd ?? field.value.length;
        field.setSelectionRange(0, end);
      } else if (chmod !== null) {
        $("chmod-octal").focus();
        $("chmod-octal").select();
      } else {
        okButton.focus();
      }
      return new Promise((resolve) => {
        dialogResolve = resolve;
      });
    }
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok";
      const resolve = dialogResolve;
      dialogResolve = null;
      if (!resolve) return;
      if (!ok) resolve(null);
      else if (!$("dialog-input-wrap").hidden) resolve($("dialog-input").value);
      else if (!$("dialog-chmod").hidden) resolve(parseInt($("chmod-octal").value || "0", 8));
      else resolve(true);
      scroll.focus({ preventScroll: true });
    });
    $("dialog-form").addEventListener("submit", (event) => {
      if (event.submitter && event.submitter.value === "ok" && !$("dialog-chmod").hidden) {
        if (!/^[0-7]{3,4}$/.test($("chmod-octal").value)) {
          event.preventDefault();
          $("chmod-octal").setCustomValidity("Three or four octal digits, like 755.");
          $("chmod-octal").reportValidity();
        }
      }
    });
    // Enter in the text field submits as OK (the form's first submit button is Cancel).
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target.tagName === "INPUT" && event.target.type !== "checkbox") {
        event.preventDefault();
        $("dialog-ok").click();
      }
    });
    function setChmod(mode) {
      $("chmod-octal").value = mode.toString(8).padStart(3, "0");
      $("chmod-octal").setCustomValidity("");
      dialog.querySelectorAll("[data-bit]").forEach((box) => {
        box.checked = (mode & Number(box.dataset.bit)) !== 0;
      });
    }
    $("chmod-octal").addEventListener("input", () => {
      const field = $("chmod-octal");
      field.setCustomValidity("");
      if (!/^[0-7]{3,4}$/.test(field.value)) return;
      const mode = parseInt(field.value, 8);
      dialog.querySelectorAll("[data-bit]").forEach((box) => {
        box.checked = (mode & Number(box.dataset.bit)) !== 0;
      });
    });
    dialog.querySelectorAll("[data-bit]").forEach((box) =>
      box.addEventListener("change", () => {
        const field = $("chmod-octal");
        const old = /^[0-7]{3,4}$/.test(field.value) ? parseInt(field.value, 8) : 0;
        let mode = old & ~0o777;
        dialog.querySelectorAll("[data-bit]").forEach((b) => {
          if (b.checked) mode |= Number(b.dataset.bit);
        });
        field.value = mode.toString(8).padStart(field.value.length === 4 ? 4 : 3, "0");
      })
    );

    // ---------------------------------------------------------------- Actions
    async function newFolder() {
      const name = await showDialog({ title: "New folder", input: { label: "Name", value: "New folder" }, ok: "Create" });
      if (!name || !name.trim()) return;
      try {
        await api("mkdir", { method: "POST", body: { path: join(state.path, name.trim()) } });
      } catch (error) {
        return;
      }
      toast(`Created ${name.trim()}.`);
      await refresh(name.trim());
    }

    async function rename() {
      const entry = selectedEntries()[0];
      if (!entry) return;
      const dot = entry.type === "file" ? entry.name.lastIndexOf(".") : -1;
      const name = await showDialog({
        title: `Rename ${entry.name}`,
        input: { label: "New name", value: entry.name, selectEnd: dot > 0 ? dot : entry.name.length },
        ok: "Rename",
      });
      if (!name || !name.trim() || name === entry.name) return;
      try {
        await api("rename", { method: "POST", body: { from: join(state.path, entry.name), to: join(state.path, name.trim()) } });
      } catch (error) {
        return;
      }
      await refresh(name.trim());
    }

    async function moveTo(entries, folder) {
      if (!entries.length) return;
      const target = folder.replace(/\/+$/, "") || "/";
      let moved = 0;
      for (const entry of entries) {
        const from = join(state.path, entry.name);
        if (target === from || target.startsWith(from + "/") || target === state.path) continue;
        try {
          await api("rename", { method: "POST", body: { from, to: join(target, entry.name) } });
          moved += 1;
        } catch (error) {
          break;
        }
      }
      if (moved) toast(`Moved ${moved} item${moved === 1 ? "" : "s"} to ${target}.`);
      await refresh();
    }

    async function move() {
      const entries = selectedEntries();
      if (!entries.length) return;
      const what = entries.length === 1 ? entries[0].name : `${entries.length} items`;
      const folder = await showDialog({ title: `Move ${what}`, input: { label: "To folder", value: state.path }, ok: "Move" });
      if (!folder || !folder.trim()) return;
      const absolute = folder.trim().startsWith("/") ? folder.trim() : join(state.path, folder.trim());
      await moveTo(entries, absolute);
    }

    async function remove() {
      const entries = selectedEntries();
      if (!entries.length) return;
      const folders = entries.filter((e) => e.type === "dir").length;
      const title = entries.length === 1 ? `Delete ${entries[0].name}?` : `Delete ${entries.length} items?`;
      let text = entries.length === 1 ? "" : entries.slice(0, 5).map((e) => e.name).join(", ") + (entries.length > 5 ? ", …" : "") + ". ";
      if (folders) text += `${folders === 1 && entries.length === 1 ? "This folder" : folders + " folder" + (folders === 1 ? "" : "s")} will be deleted with everything inside. `;
      text += "This cannot be undone.";
      const ok = await showDialog({ title, text, ok: "Delete", danger: true });
      if (!ok) return;
      let deleted = 0;
      for (const entry of entries) {
        try {
          await api("delete", { method: "POST", body: { path: join(state.path, entry.name), recursive: entry.type === "dir" } });
          deleted += 1;
        } catch (error) {
          break;
        }
      }
      if (deleted) toast(`Deleted ${deleted} item${deleted === 1 ? "" : "s"}.`);
      if (state.preview && entries.some((e) => e.name === state.preview.entry.name)) closePreview();
      const next = state.view[Math.min(state.cursor + 1, state.view.length - 1)];
      await refresh(next && !entries.includes(next) ? next.name : null);
    }

    async function chmod() {
      const entry = selectedEntries()[0];
      if (!entry) return;
      const initial = modeFromPermissions(entry.permissions) ?? (entry.type === "dir" ? 0o755 : 0o644);
      const mode = await showDialog({ title: `Permissions of ${entry.name}`, chmod: initial, ok: "Change" });
      if (mode === null || mode === undefined || Number.isNaN(mode)) return;
      const octal = mode.toString(8).padStart(3, "0");
      try {
        await api("chmod", { method: "POST", body: { path: join(state.path, entry.name), mode: octal } });
      } catch (error) {
        return;
      }
      toast(`${entry.name} is now ${octal}.`);
      await refresh(entry.name);
    }

    // ---------------------------------------------------------------- Preview and edit
    let previewTimer = null;
    let previewTicket = 0;
    function schedulePreview(entry) {
      clearTimeout(previewTimer);
      previewTimer = setTimeout(() => openPreview(entry), 250);
    }

    async function readStart(path, limit) {
      const response = await fetch(downloadUrl(path), { credentials: "same-origin" });
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch (error) {
          body = null;
        }
        throw new ApiError(response.status, body);
      }
      const reader = response.body.getReader();
      const chunks = [];
      let size = 0;
      let complete = false;
      while (size < limit) {
        const { done, value } = await reader.read();
        if (done) {
          complete = true;
          break;
        }
        chunks.push(value);
        size += value.length;
      }
      if (!complete) reader.cancel().catch(() => {});
      const bytes = new Uint8Array(Math.min(size, limit));
      let offset = 0;
      for (const chunk of chunks) {
        const part = chunk.subarray(0, Math.min(chunk.length, bytes.length - offset));
        bytes.set(part, offset);
        offset += part.length;
        if (offset >= bytes.length) break;
      }
      return { bytes, complete: complete && size <= limit };
    }

    function looksBinary(bytes) {
      const sample = bytes.subarray(0, 8000);
      for (let i = 0; i < sample.length; i += 1) if (sample[i] === 0) return true;
      return false;
    }

    async function openPreview(entry) {
      if (!entry || entry.type !== "file") return;
      const ticket = ++previewTicket;
      const pane = $("preview");
      const body = $("preview-body");
      const path = join(state.path, entry.name);
      state.preview = { entry, path, text: null, complete: false, editing: false };
      pane.hidden = false;
      app.classList.add("with-preview");
      $("preview-name").textContent = entry.name;
      $("preview-meta").textContent = [humanSize(entry.size), humanDate(entry.modified), entry.permissions].filter(Boolean).join(" · ");
      $("preview-download").href = downloadUrl(path);
      $("preview-download").setAttribute("download", entry.name);
      showEditButtons(false, false);
      const spinner = document.createElement("span");
      spinner.className = "spinner large";
      body.replaceChildren(spinner);
      const type = IMAGE_TYPES[extension(entry.name)];
      try {
        if (type) {
          if (entry.size !== null && entry.size > 25 * 1024 * 1024) throw new Error("This image is too large to preview; download it instead.");
          const { bytes } = await readStart(path, 25 * 1024 * 1024);
          if (ticket !== previewTicket) return;
          const img = document.createElement("img");
          img.alt = entry.name;
          img.className = "preview-image";
          // A data: URL, which the pages' Content-Security-Policy allows for images (blob: not).
          img.src = await new Promise((resolve, reject) => {
            const reader = new FileReader();
            reader.onload = () => resolve(reader.result);
            reader.onerror = () => reject(new Error("The image could not be read."));
            reader.readAsDataURL(new Blob([bytes], { type }));
          });
          if (ticket !== previewTicket) return;
          body.replaceChildren(img);
          return;
        }
        const { bytes, complete } = await readStart(path, PREVIEW_BYTES);
        if (ticket !== previewTicket) return;
        if (looksBinary(bytes)) {
          const note = document.createElement("p");
          note.className = "muted preview-note";
          note.textContent = "No preview for this kind of file. Download it to open it.";
          body.replaceChildren(note);
          return;
        }
        const text = new TextDecoder("utf-8").decode(bytes);
        state.preview.text = text;
        state.preview.complete = complete;
        const pre = document.createElement("pre");
        pre.className = "preview-text";
        pre.textContent = text;
        const nodes = [pre];
        if (!complete) {
          const note = document.createElement("p");
          note.className = "muted small preview-note";
          note.textContent = "Showing the first 256 KB. Download the file to see all of it.";
          nodes.push(note);
        }
        body.replaceChildren(...nodes);
        showEditButtons(complete, false);
      } catch (error) {
        if (ticket !== previewTicket) return;
        const note = document.createElement("p");
        note.className = "preview-note error-text";
        note.textContent = error.message;
        body.replaceChildren(note);
        if (error instanceof ApiError) toast(error.message, "failed");
      }
    }

    function showEditButtons(canEdit, editing) {
      $("preview-edit").hidden = !canEdit || editing;
      $("preview-save").hidden = !editing;
      $("preview-cancel").hidden = !editing;
      $("preview-download").hidden = editing;
    }

    function startEdit() {
      const preview = state.preview;
      if (!preview || preview.text === null || !preview.complete) return;
      preview.editing = true;
      const area = document.createElement("textarea");
      area.className = "preview-editor mono";
      area.id = "preview-editor";
      area.spellcheck = false;
      area.value = preview.text;
      area.setAttribute("aria-label", `Contents of ${preview.entry.name}`);
      area.addEventListener("keydown", (event) => {
        if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "s") {
          event.preventDefault();
          saveEdit();
        }
      });
      $("preview-body").replaceChildren(area);
      showEditButtons(true, true);
      area.focus();
    }

    async function saveEdit() {
      const preview = state.preview;
      if (!preview || !preview.editing) return;
      const text = $("preview-editor").value;
      const save = $("preview-save");
      save.disabled = true;
      const form = new FormData();
      form.append("file", new Blob([text], { type: "application/octet-stream" }), preview.entry.name);
      const dir = parent(preview.path);
      try {
        const response = await fetch(`${siteUrl("upload")}?path=${encodeURIComponent(dir)}`, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
          body: form,
        });
        if (!response.ok) {
          let body = null;
          try {
            body = await response.json();
          } catch (error) {
            body = null;
          }
          throw new ApiError(response.status, body);
        }
      } catch (error) {
        toast(error instanceof ApiError ? error.message : "Satchel could not be reached.", "failed");
        save.disabled = false;
        return;
      }
      save.disabled = false;
      toast(`Saved ${preview.entry.name}.`);
      preview.editing = false;
      await refresh(preview.entry.name);
      const entry = state.view.find((e) => e.name === preview.entry.name) || preview.entry;
      openPreview(entry);
    }

    function closePreview() {
      clearTimeout(previewTimer);
      previewTicket += 1;
      state.preview = null;
      $("preview").hidden = true;
      $("preview-body").replaceChildren();
      app.classList.remove("with-preview");
    }

    $("preview-close").addEventListener("click", () => {
      closePreview();
      scroll.focus();
    });
    $("preview-edit").addEventListener("click", startEdit);
    $("preview-save").addEventListener("click", saveEdit);
    $("preview-cancel").addEventListener("click", () => {
      if (state.preview) {
        state.preview.editing = false;
        openPreview(state.preview.entry);
      }
    });

    // ---------------------------------------------------------------- Uploads
    const uploads = { queue: [], active: 0, done: 0, failed: 0, bytes: 0, touched: new Set() };
    const CONCURRENCY = 3;

    function queueUpload(file, dir, label) {
      $("transfers").hidden = false;
      const li = document.createElement("li");
      li.className = "transfer";
      const name = document.createElement("span");
      name.className = "transfer-name";
      name.textContent = label || file.name;
      name.title = join(dir, file.name);
      const bar = document.createElement("div");
      bar.className = "progress";
      bar.setAttribute("role", "progressbar");
      bar.setAttribute("aria-label", `Upload of ${file.name}`);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-valuenow", "0");
      const fill = document.createElement("span");
      bar.appendChild(fill);
      const stateLabel = document.createElement("span");
      stateLabel.className = "state";
      stateLabel.textContent = "queued";
      const size = document.createElement("span");
      size.className = "muted small transfer-size";
      size.textContent = humanSize(file.size);
      li.append(name, size, bar, stateLabel);
      $("transfer-list").appendChild(li);
      uploads.queue.push({ file, dir, li, fill, bar, stateLabel });
      summarise();
      pump();
    }

    function pump() {
      while (uploads.active < CONCURRENCY && uploads.queue.length) {
        const item = uploads.queue.shift();
        uploads.active += 1;
        sendUpload(item).finally(() => {
          uploads.active -= 1;
          summarise();
          pump();
          if (!uploads.active && !uploads.queue.length) finished();
        });
      }
    }

    function sendUpload(item) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", `${siteUrl("upload")}?path=${encodeURIComponent(item.dir)}`);
        xhr.setRequestHeader("X-CSRFToken", csrfToken);
        xhr.setRequestHeader("Accept", "application/json");
        item.stateLabel.textContent = "uploading";
        item.stateLabel.className = "state running";
        xhr.upload.onprogress = (event) => {
          if (!event.lengthComputable) return;
          // The last few percent wait for the server to store the file on the FTP site.
          const percent = Math.round((95 * event.loaded) / event.total);
          item.fill.style.width = `${percent}%`;
          item.bar.setAttribute("aria-valuenow", String(percent));
        };
        xhr.onload = () => {
          if (xhr.status >= 200 && xhr.status < 300) {
            item.fill.style.width = "100%";
            item.bar.setAttribute("aria-valuenow", "100");
            item.stateLabel.textContent = "done";
            item.stateLabel.className = "state done";
            item.li.classList.add("done");
            uploads.done += 1;
            uploads.bytes += item.file.size;
            uploads.touched.add(item.dir);
          } else {
            let body = null;
            try {
              body = JSON.parse(xhr.responseText);
            } catch (error) {
              body = null;
            }
            fail(item, new ApiError(xhr.status, body).message);
          }
          resolve();
        };
        xhr.onerror = () => {
          fail(item, "Satchel could not be reached. Check your connection.");
          resolve();
        };
        const form = new FormData();
        form.append("file", item.file, item.file.name);
        xhr.send(form);
      });
    }

    function fail(item, message) {
      uploads.failed += 1;
      item.stateLabel.textContent = "failed";
      item.stateLabel.className = "state failed";
      item.li.classList.add("failed");
      const error = document.createElement("span");
      error.className = "transfer-error small";
      error.textContent = message;
      item.li.appendChild(error);
      toast(`${item.file.name}: ${message}`, "failed");
    }

    function summarise() {
      const waiting = uploads.queue.length + uploads.active;
      const parts = [];
      if (waiting) parts.push(`${waiting} in progress`);
      parts.push(`${uploads.done} uploaded (${humanSize(uploads.bytes)})`);
      if (uploads.failed) parts.push(`${uploads.failed} failed`);
      $("transfer-summary").textContent = parts.join(" · ");
    }

    function finished() {
      const failed = uploads.failed;
      toast(failed ? `Uploads finished: ${uploads.done} done, ${failed} failed.` : `Uploaded ${uploads.done} file${uploads.done === 1 ? "" : "s"}.`, failed ? "failed" : "");
      $("transfers").classList.toggle("has-failed", failed > 0);
      if ([...uploads.touched].some((dir) => dir === state.path || parent(dir) === state.path || dir.startsWith(state.path))) refresh();
      uploads.touched.clear();
    }

    $("transfers-clear").addEventListener("click", () => {
      $("transfer-list").querySelectorAll(".transfer.done, .transfer.failed").forEach((li) => li.remove());
      if (!uploads.queue.length && !uploads.active) {
        uploads.done = 0;
        uploads.failed = 0;
        uploads.bytes = 0;
        $("transfers").hidden = true;
      }
      summarise();
    });

    async function makeDirs(base, dirs) {
      const sorted = [...new Set(dirs)].sort((a, b) => a.split("/").length - b.split("/").length || a.localeCompare(b));
      for (const dir of sorted) {
        try {
          await api("mkdir", { method: "POST", body: { path: join(base, dir) }, quiet: true });
        } catch (error) {
          // Most often it exists already; a real refusal shows up on the uploads into it.
        }
      }
    }

    async function uploadFileList(files, base) {
      const list = Array.from(files);
      const dirs = [];
      list.forEach((file) => {
        const rel = file.webkitRelativePath || "";
        const dir = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
        if (dir) {
          const parts = dir.split("/");
          for (let i = 1; i <= parts.length; i += 1) dirs.push(parts.slice(0, i).join("/"));
        }
      });
      if (dirs.length) await makeDirs(base, dirs);
      list.forEach((file) => {
        const rel = file.webkitRelativePath || "";
        const dir = rel.includes("/") ? join(base, rel.slice(0, rel.lastIndexOf("/"))) : base;
        queueUpload(file, dir, rel || file.name);
      });
    }

    function readAllEntries(reader) {
      return new Promise((resolve, reject) => {
        const all = [];
        const next = () =>
          reader.readEntries((batch) => {
            if (!batch.length) resolve(all);
            else {
              all.push(...batch);
              next();
            }
          }, reject);
        next();
      });
    }
    function entryFile(entry) {
      return new Promise((resolve, reject) => entry.file(resolve, reject));
    }

    async function uploadDropped(entries, looseFiles, base) {
      const dirs = [];
      const files = [];
      async function walk(entry, prefix) {
        if (entry.isFile) {
          files.push({ file: await entryFile(entry), rel: prefix });
        } else if (entry.isDirectory) {
          const here = prefix ? `${prefix}/${entry.name}` : entry.name;
          dirs.push(here);
          const children = await readAllEntries(entry.createReader());
          for (const child of children) await walk(child, here);
        }
      }
      for (const entry of entries) await walk(entry, "");
      looseFiles.forEach((file) => files.push({ file, rel: "" }));
      if (dirs.length) await makeDirs(base, dirs);
      files.forEach(({ file, rel }) => queueUpload(file, rel ? join(base, rel) : base, rel ? `${rel}/${file.name}` : file.name));
    }

    $("upload-input").addEventListener("change", (event) => {
      uploadFileList(event.target.files, state.path);
      event.target.value = "";
    });
    $("upload-folder-input").addEventListener("change", (event) => {
      uploadFileList(event.target.files, state.path);
      event.target.value = "";
    });

    // Drag and drop: files from the desktop upload; rows dragged onto a folder move.
    let dragDepth = 0;
    function isExternal(event) {
      return event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
    }
    function isInternal(event) {
      return event.dataTransfer && Array.from(event.dataTransfer.types).includes(DRAG_TYPE);
    }
    function dropTarget(element, pathOf) {
      element.addEventListener("dragover", (event) => {
        if (!isInternal(event) && !isExternal(event)) return;
        event.preventDefault();
        event.stopPropagation();
        event.dataTransfer.dropEffect = isInternal(event) ? "move" : "copy";
        element.classList.add("drop-hover");
        if (isExternal(event)) $("drop-target").textContent = pathOf();
      });
      element.addEventListener("dragleave", () => element.classList.remove("drop-hover"));
      element.addEventListener("drop", (event) => {
        element.classList.remove("drop-hover");
        if (!isInternal(event) && !isExternal(event)) return;
        event.preventDefault();
        event.stopPropagation();
        hideOverlay();
        if (isInternal(event)) {
          const names = JSON.parse(event.dataTransfer.getData(DRAG_TYPE) || "[]");
          const entries = state.view.filter((e) => names.includes(e.name));
          moveTo(entries, pathOf());
        } else {
          handleExternalDrop(event, pathOf());
        }
      });
    }
    function handleExternalDrop(event, base) {
      const items = Array.from(event.dataTransfer.items || []);
      const entries = [];
      const loose = [];
      // webkitGetAsEntry must be called now, while the drop event is being dispatched.
      items.forEach((item) => {
        if (item.kind !== "file") return;
        const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
        if (entry) entries.push(entry);
        else if (item.getAsFile()) loose.push(item.getAsFile());
      });
      if (!items.length) Array.from(event.dataTransfer.files).forEach((file) => loose.push(file));
      uploadDropped(entries, loose, base);
    }
    function hideOverlay() {
      dragDepth = 0;
      $("drop-overlay").hidden = true;
    }
    app.addEventListener("dragenter", (event) => {
      if (!isExternal(event)) return;
      dragDepth += 1;
      $("drop-target").textContent = state.path;
      $("drop-overlay").hidden = false;
    });
    app.addEventListener("dragleave", () => {
      dragDepth = Math.max(0, dragDepth - 1);
      if (!dragDepth) $("drop-overlay").hidden = true;
    });
    app.addEventListener("dragover", (event) => {
      if (!isExternal(event)) return;
      event.preventDefault();
      $("drop-target").textContent = state.path;
    });
    app.addEventListener("drop", (event) => {
      if (!isExternal(event)) return;
      event.preventDefault();
      hideOverlay();
      handleExternalDrop(event, state.path);
    });
    tbody.addEventListener("dragstart", (event) => {
      const tr = event.target.closest && event.target.closest("tr.file-row");
      if (!tr) return;
      const name = tr.dataset.name;
      const names = state.selected.has(name) ? [...state.selected] : [name];
      event.dataTransfer.setData(DRAG_TYPE, JSON.stringify(names));
      event.dataTransfer.setData("text/plain", names.join("\n"));
      event.dataTransfer.effectAllowed = "move";
    });

    // ---------------------------------------------------------------- Events
    scroll.addEventListener("scroll", () => renderRows(false), { passive: true });
    window.addEventListener("resize", () => renderRows(true));

    tbody.addEventListener("click", (event) => {
      const tr = event.target.closest("tr.file-row");
      if (!tr) return;
      const index = Number(tr.dataset.index);
      const entry = state.view[index];
      const link = event.target.closest("a.file-name");
      if (link && !(event.ctrlKey || event.metaKey || event.shiftKey)) {
        if (entry.type !== "file") {
          event.preventDefault();
          navigate(join(state.path, entry.name));
        }
        return; // files: the plain link downloads
      }
      if (link) event.preventDefault();
      moveCursor(index, { extend: event.shiftKey, toggle: event.ctrlKey || event.metaKey });
      scroll.focus({ preventScroll: true });
    });
    tbody.addEventListener("dblclick", (event) => {
      const tr = event.target.closest("tr.file-row");
      if (!tr || event.target.closest("a.file-name")) return;
      const entry = state.view[Number(tr.dataset.index)];
      if (entry.type === "file") openPreview(entry);
      else open(entry);
    });

    table.querySelectorAll("thead button[data-sort]").forEach((button) =>
      button.addEventListener("click", () => {
        const key = button.dataset.sort;
        if (state.sort.key === key) state.sort.dir = -state.sort.dir;
        else state.sort = { key, dir: key === "name" || key === "permissions" ? 1 : -1 };
        applyView();
      })
    );

    filterInput.addEventListener("input", () => {
      state.filter = filterInput.value;
      applyView();
    });
    filterInput.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        filterInput.value = "";
        state.filter = "";
        applyView();
        scroll.focus();
      } else if (event.key === "ArrowDown" || event.key === "Enter") {
        event.preventDefault();
        scroll.focus();
        if (state.view.length) moveCursor(state.cursor >= 0 ? state.cursor : 0);
        if (event.key === "Enter" && state.view.length === 1) open(state.view[0]);
      }
    });

    document.addEventListener("keydown", (event) => {
      if (dialog.open) return;
      const target = event.target;
      const typing = target.matches && target.matches("input, textarea, select, [contenteditable]");
      if (typing) return;
      if (event.altKey) {
        if (event.key === "ArrowUp") {
          event.preventDefault();
          goUp();
        }
        return;
      }
      const inPreview = target.closest && target.closest("#preview");
      const key = event.key;
      if (key === "/") {
        event.preventDefault();
        filterInput.focus();
        filterInput.select();
        return;
      }
      if (key === "Escape" && state.preview) {
        closePreview();
        scroll.focus();
        return;
      }
      if (inPreview) return;
      if (target.closest && target.closest("a, button") && (key === "Enter" || key === " ")) return;
      const ctrl = event.ctrlKey || event.metaKey;
      const page = Math.max(1, Math.floor(scroll.clientHeight / ROW_H) - 1);
      const handled = {
        ArrowDown: () => moveCursor(state.cursor < 0 ? 0 : state.cursor + 1, { extend: event.shiftKey }),
        ArrowUp: () => moveCursor(state.cursor < 0 ? 0 : state.cursor - 1, { extend: event.shiftKey }),
        PageDown: () => moveCursor(state.cursor + page, { extend: event.shiftKey }),
        PageUp: () => moveCursor(state.cursor - page, { extend: event.shiftKey }),
        Home: () => moveCursor(0, { extend: event.shiftKey }),
        End: () => moveCursor(state.view.length - 1, { extend: event.shiftKey }),
        Enter: () => open(current()),
        Backspace: () => goUp(),
        Delete: () => remove(),
        F2: () => rename(),
        " ": () => {
          const entry = current();
          if (entry && entry.type === "file") openPreview(entry);
        },
      }[key];
      if (ctrl && key.toLowerCase() === "a") {
        event.preventDefault();
        state.selected = new Set(state.view.map((e) => e.name));
        syncRowStates();
        return;
      }
      if (handled && !ctrl) {
        event.preventDefault();
        handled();
      }
    });

    window.addEventListener("popstate", (event) => {
      const stateData = event.state;
      if (stateData && stateData.site === state.site) navigate(stateData.path, { push: false });
    });

    $("site-picker").addEventListener("change", (event) => {
      location.assign(`${data.page}?site=${encodeURIComponent(event.target.value)}`);
    });
    $("go-up").addEventListener("click", goUp);
    $("refresh").addEventListener("click", () => refresh());
    $("new-folder").addEventListener("click", newFolder);
    $("act-rename").addEventListener("click", rename);
    $("act-move").addEventListener("click", move);
    $("act-chmod").addEventListener("click", chmod);
    $("act-delete").addEventListener("click", remove);
    $("act-preview").addEventListener("click", () => openPreview(selectedEntries()[0]));

    navigate(data.path || "", { push: false }).then(() => scroll.focus({ preventScroll: true }));
  }

  const form = $("site-form");
  if (form) siteForm(form);
  const app = $("files-app");
  if (app) browser(app);
})();
