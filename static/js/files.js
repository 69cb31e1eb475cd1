// Satchel files: the FTP site form's port default, and the file browser (/files/).
// The browser talks to the REST API (/api/v1/ftp/sites/{id}/...) with the session cookie and
// the CSRF header. Nothing from the server is ever inserted as HTML: textContent only.
(function () {
  "use strict";

  const { formatSize } = window.Satchel;

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
        close: ["M18 6 6 18", "M6 6l12 12"],
        down: ["M12 4v12", "M6 10l6 6 6-6", "M4 20h16"],
        copy: ["M9 9h11v11H9z", "M5 15H4V4h11v1"],
        up: ["M12 20V8", "M6 14l6-6 6 6", "M4 4h16"],
      };
      (paths[kind] || paths.file).forEach((d) => {
        const path = document.createElementNS(ns, "path");
        path.setAttribute("d", d);
        svg.appendChild(path);
      });
      return svg;
    }

    function closeIcon() {
      return svgIcon("close");
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
      size.textContent = entry.type === "dir" ? "" : formatSize(entry.size);
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
    function showDialog({ title, text = "", input = null, chmod = null, copy = false, ok = "OK", danger = false }) {
      $("dialog-title").textContent = title;
      $("dialog-text").textContent = text;
      $("dialog-text").hidden = !text;
      $("dialog-input-wrap").hidden = input === null;
      $("dialog-chmod").hidden = chmod === null;
      $("dialog-copy").hidden = !copy;
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
      } else if (copy) {
        showCopyFolders();
        $("copy-folder").focus();
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
      $("preview-meta").textContent = [formatSize(entry.size), humanDate(entry.modified), entry.permissions].filter(Boolean).join(" · ");
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
    // Three requests in flight; the server stores at most two at once per site (as FileZilla
    // runs two transfers per site), so the third one's body arrives meanwhile.
    const CONCURRENCY = 3;
    // Small files bound for one folder share a POST (one request, then the server stores them
    // over one FTP session): a folder of many small files is not a request per file.
    const BATCH_FILE_MAX = 1024 * 1024;
    const BATCH_FILES = 100;
    const BATCH_BYTES = 16 * 1024 * 1024;
    const CHUNKED_ABOVE = 16 * 1024 * 1024; // larger files upload in resumable chunks
    const CHUNK_SIZE = 8 * 1024 * 1024;
    const RETRY_DELAYS = [1000, 2000, 4000, 8000, 15000, 30000];

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
      size.textContent = formatSize(file.size);
      const cancelButton = document.createElement("button");
      cancelButton.type = "button";
      cancelButton.className = "icon-button small-icon transfer-cancel";
      cancelButton.setAttribute("aria-label", `Cancel upload of ${file.name}`);
      cancelButton.title = "Cancel";
      cancelButton.appendChild(closeIcon());
      li.append(name, size, bar, stateLabel, cancelButton);
      $("transfer-list").appendChild(li);
      const item = { file, dir, li, fill, bar, stateLabel, cancelButton };
      cancelButton.addEventListener("click", () => cancelUpload(item));
      uploads.queue.push(item);
      summarise();
      schedulePump();
    }

    // A dropped folder queues its files one by one: start once they are all queued, so that
    // the first POST already carries a batch.
    let pumpScheduled = false;
    function schedulePump() {
      if (pumpScheduled) return;
      pumpScheduled = true;
      setTimeout(() => {
        pumpScheduled = false;
        pump();
      }, 0);
    }

    function pump() {
      while (uploads.active < CONCURRENCY && uploads.queue.length) {
        const batch = takeBatch();
        uploads.active += 1;
        sendUpload(batch).finally(() => {
          uploads.active -= 1;
          summarise();
          pump();
          if (!uploads.active && !uploads.queue.length) finished();
        });
      }
    }

    // The next queued file, with the small files after it that go to the same folder.
    function takeBatch() {
      const first = uploads.queue.shift();
      const batch = [first];
      if (first.single || first.file.size > BATCH_FILE_MAX) return batch;
      let bytes = first.file.size;
      while (batch.length < BATCH_FILES && uploads.queue.length) {
        const next = uploads.queue[0];
        if (next.single || next.dir !== first.dir || next.file.size > BATCH_FILE_MAX || bytes + next.file.size > BATCH_BYTES) break;
        batch.push(uploads.queue.shift());
        bytes += next.file.size;
      }
      return batch;
    }

    function parseJson(text) {
      try {
        return JSON.parse(text);
      } catch (error) {
        return null;
      }
    }
    function setItemState(item, text, variant) {
      item.stateLabel.textContent = text;
      item.stateLabel.className = `state ${variant}`;
    }
    function showPercent(item, percent) {
      item.fill.style.width = `${percent}%`;
      item.bar.setAttribute("aria-valuenow", String(percent));
    }
    function succeed(item) {
      showPercent(item, 100);
      setItemState(item, "done", "done");
      item.li.classList.add("done");
      item.cancelButton.hidden = true;
      uploads.done += 1;
      uploads.bytes += item.file.size;
      uploads.touched.add(item.dir);
    }

    function sendUpload(items) {
      if (items.length === 1 && items[0].file.size > CHUNKED_ABOVE) return sendChunked(items[0]);
      return sendForm(items);
    }

    // One POST with one file, or with several small ones. A batch that fails is sent again
    // file by file (the server stores files in order, so some may be there already: storing
    // them again is harmless), so each file shows its own result.
    function sendForm(items) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        items.forEach((item) => {
          item.xhr = xhr;
          setItemState(item, "uploading", "running");
        });
        const settle = () => {
          items.forEach((item) => {
            item.xhr = null;
          });
          resolve();
        };
        // What was not cancelled goes back to the front of the queue, each file on its own.
        const requeue = () => {
          const left = items.filter((item) => !item.cancelled);
          left.forEach((item) => {
            item.single = true;
            setItemState(item, "queued", "");
          });
          uploads.queue.unshift(...left);
        };
        const failed = (message) => {
          if (items.length === 1) fail(items[0], message);
          else requeue();
        };
        xhr.open("POST", `${siteUrl("upload")}?path=${encodeURIComponent(items[0].dir)}`);
        xhr.setRequestHeader("X-CSRFToken", csrfToken);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.onprogress = (event) => {
          if (!event.lengthComputable) return;
          // The last few percent wait for the server to store the files on the FTP site.
          const percent = Math.round((95 * event.loaded) / event.total);
          items.forEach((item) => showPercent(item, percent));
        };
        xhr.onload = () => {
          if (xhr.status >= 200 && xhr.status < 300) items.forEach(succeed);
          else failed(new ApiError(xhr.status, parseJson(xhr.responseText)).message);
          settle();
        };
        xhr.onerror = () => {
          failed("Satchel could not be reached. Check your connection.");
          settle();
        };
        xhr.onabort = () => {
          requeue(); // a cancel aborts the POST: the others go on without the cancelled one
          settle();
        };
        const form = new FormData();
        items.forEach((item) => form.append("file", item.file, item.file.name));
        xhr.send(form);
      });
    }

    // Large files go in chunks to an upload session (API: .../uploads/); a dropped
    // connection or a server hiccup costs one chunk at most: the page asks the server how
    // far it got and goes on from there. The session id is kept in localStorage, so the
    // same file picked again after a reload continues too.
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    function resumeKey(item) {
      const file = item.file;
      return `satchel.upload:${state.site}|${item.dir}|${file.name}|${file.size}|${file.lastModified}`;
    }
    function remembered(key) {
      try {
        return localStorage.getItem(key);
      } catch (error) {
        return null;
      }
    }
    function remember(key, value) {
      try {
        if (value === null) localStorage.removeItem(key);
        else localStorage.setItem(key, value);
      } catch (error) {
        // Private mode: uploads still resume within this page.
      }
    }

    function putChunk(item, url, offset, blob) {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        item.xhr = xhr;
        xhr.open("PUT", `${url}?offset=${offset}`);
        xhr.setRequestHeader("X-CSRFToken", csrfToken);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.setRequestHeader("Content-Type", "application/octet-stream");
        xhr.upload.onprogress = (event) => {
          showPercent(item, Math.min(99, Math.floor((99 * (offset + event.loaded)) / item.file.size)));
        };
        xhr.onload = () => resolve({ status: xhr.status, body: parseJson(xhr.responseText) });
        xhr.onerror = () => resolve({ status: 0, body: null });
        xhr.onabort = () => resolve({ status: -1, body: null });
        xhr.send(blob);
      });
    }

    function retryable(status, body) {
      if (status === 0 || status === 503 || status === 504) return true;
      if (status !== 502 || !body) return false;
      const code = body.reply_code;
      return ["unreachable", "transfer_failed"].includes(body.code) || (code >= 400 && code < 500);
    }

    async function openUpload(item, key) {
      const known = remembered(key);
      if (known) {
        const previous = await window.Satchel.api(`${siteUrl("uploads")}${known}/`, { quiet: true }).catch(() => null);
        if (previous && previous.state === "open" && previous.size === item.file.size) return previous;
      }
      const body = { path: item.dir, name: item.file.name, size: item.file.size };
      return window.Satchel.api(siteUrl("uploads"), { method: "POST", body, quiet: true });
    }

    async function sendChunked(item) {
      const key = resumeKey(item);
      setItemState(item, "uploading", "running");
      let upload;
      try {
        upload = await openUpload(item, key);
      } catch (error) {
        fail(item, error.message);
        return;
      }
      remember(key, String(upload.id));
      const url = `${siteUrl("uploads")}${upload.id}/`;
      item.discard = () => window.Satchel.api(url, { method: "DELETE", quiet: true }).catch(() => {});
      let offset = upload.offset;
      let failures = 0;
      while (!item.cancelled) {
        const end = Math.min(item.file.size, offset + CHUNK_SIZE);
        const { status, body } = await putChunk(item, url, offset, item.file.slice(offset, end));
        if (item.cancelled) return;
        if (status === 200) {
          failures = 0;
          offset = body.offset;
          if (body.state === "done") {
            remember(key, null);
            succeed(item);
            return;
          }
          continue;
        }
        if (status === 409 && body && typeof body.offset === "number" && body.code !== "upload_finished") {
          if (body.code === "chunk_busy") await sleep(2000);
          offset = body.offset;
          continue;
        }
        if (retryable(status, body) && failures < RETRY_DELAYS.length) {
          setItemState(item, "reconnecting", "paused");
          item.stateLabel.title = `The connection dropped at byte ${offset.toLocaleString()}; the upload goes on from what the server holds.`;
          await new Promise((resolve) => {
            item.wake = resolve; // a cancel ends the wait
            setTimeout(resolve, RETRY_DELAYS[failures]);
          });
          failures += 1;
          const now = await window.Satchel.api(url, { quiet: true }).catch(() => null);
          if (item.cancelled) return;
          if (now) offset = now.offset;
          setItemState(item, "uploading", "running");
          item.stateLabel.title = "";
          continue;
        }
        if (body && body.code === "upload_finished") remember(key, null);
        fail(item, status === 0 ? "Satchel could not be reached. Check your connection." : new ApiError(status, body).message);
        return;
      }
    }

    function cancelUpload(item) {
      if (item.cancelled || item.li.classList.contains("done") || item.li.classList.contains("failed")) return;
      item.cancelled = true;
      const queued = uploads.queue.indexOf(item);
      if (queued >= 0) uploads.queue.splice(queued, 1);
      if (item.xhr) item.xhr.abort();
      if (item.wake) item.wake();
      if (item.discard) item.discard();
      setItemState(item, "cancelled", "failed");
      item.li.classList.add("cancelled");
      item.cancelButton.hidden = true;
      summarise();
    }

    function fail(item, message) {
      uploads.failed += 1;
      item.cancelButton.hidden = true;
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
      parts.push(`${uploads.done} uploaded (${formatSize(uploads.bytes)})`);
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
      $("transfer-list").querySelectorAll(".transfer.done, .transfer.failed, .transfer.cancelled").forEach((li) => li.remove());
      if (!uploads.queue.length && !uploads.active) {
        uploads.done = 0;
        uploads.failed = 0;
        uploads.bytes = 0;
      }
      if (!$("transfer-list").children.length) $("transfers").hidden = true;
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

    // ---------------------------------------------------------------- Downloads
    function downloadSelected() {
      const entry = selectedEntries().length === 1 ? selectedEntries()[0] : current();
      if (!entry) return;
      const link = document.createElement("a");
      link.href = downloadUrl(join(state.path, entry.name));
      link.download = entry.type === "file" ? entry.name : `${entry.name}.zip`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      if (entry.type !== "file") toast(`Downloading ${entry.name} as a zip…`);
    }

    // ---------------------------------------------------------------- Background transfers
    // Rows of GET /api/v1/ftp/transfers/, kept live by the `transfer.progress` events that
    // events.js re-dispatches on document as `satchel:transfer.progress`.
    // pending: transfers being fetched (started elsewhere) -> whether an event came meanwhile
    const bg = { rows: new Map(), pending: new Map(), loaded: false };
    const BG_ACTIVE = new Set(["queued", "running", "paused"]);
    const KIND_LABEL = { download: "Download", upload: "Upload", copy: "Copy" };

    function siteLabel(id) {
      const site = data.sites.find((item) => item.id === id);
      return site ? site.name : `site ${id}`;
    }
    function humanDuration(seconds) {
      if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
      const s = Math.max(0, Math.round(seconds));
      if (s < 60) return `${s} s`;
      if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
      return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
    }

    function bgButton(label, action, transfer) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.textContent = label;
      button.dataset.action = action;
      button.setAttribute("aria-label", `${label} ${transfer.name || basename(transfer.path)}`);
      return button;
    }

    function renderTransfer(transfer) {
      const row = bg.rows.get(transfer.id);
      const li = row.li;
      const name = transfer.name || basename(transfer.path);
      const total = transfer.bytes_total;
      const done = transfer.bytes_done || 0;
      const percent = transfer.state === "done" ? 100 : total ? Math.min(100, Math.floor((100 * done) / total)) : 0;
      li.className = `transfer bg-row ${transfer.state}`;
      li.dataset.state = transfer.state;

      const title = document.createElement("span");
      title.className = "transfer-name";
      const kind = document.createElement("span");
      kind.className = "kind-label muted small";
      kind.textContent = KIND_LABEL[transfer.kind] || transfer.kind;
      const label = document.createElement("span");
      label.textContent = name;
      const where = document.createElement("span");
      where.className = "muted small where";
      if (transfer.kind === "copy") where.textContent = `${siteLabel(transfer.site)} ${transfer.path} → ${siteLabel(transfer.target_site || transfer.site)} ${transfer.target_path}`;
      else where.textContent = `${siteLabel(transfer.site)} ${transfer.path}`;
      title.title = where.textContent;
      title.append(svgIcon(transfer.kind === "copy" ? "copy" : transfer.kind === "upload" ? "up" : "down"), kind, label, where);

      const figures = document.createElement("span");
      figures.className = "muted small transfer-figures";
      const parts = [total ? `${formatSize(done)} of ${formatSize(total)}` : formatSize(done)];
      if (transfer.state === "running" && row.speed) parts.push(`${formatSize(row.speed)}/s`);
      if (transfer.state === "running" && row.eta !== null && row.eta !== undefined) parts.push(`${humanDuration(row.eta)} left`);
      figures.textContent = parts.filter(Boolean).join(" · ");

      const bar = document.createElement("div");
      bar.className = "progress";
      bar.setAttribute("role", "progressbar");
      bar.setAttribute("aria-label", `${KIND_LABEL[transfer.kind] || "Transfer"} of ${name}`);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-valuenow", String(percent));
      const fill = document.createElement("span");
      fill.style.width = `${percent}%`;
      bar.appendChild(fill);

      const stateLabel = document.createElement("span");
      stateLabel.className = `state ${transfer.state}`;
      stateLabel.textContent = transfer.state === "running" && transfer.attempts > 1 ? `running (try ${transfer.attempts})` : transfer.state;

      const actions = document.createElement("span");
      actions.className = "transfer-actions";
      if (transfer.state === "queued" || transfer.state === "running") actions.appendChild(bgButton("Pause", "pause", transfer));
      if (transfer.state === "paused") actions.appendChild(bgButton("Resume", "resume", transfer));
      if (BG_ACTIVE.has(transfer.state)) actions.appendChild(bgButton("Cancel", "cancel", transfer));
      if (transfer.state === "failed" || transfer.state === "cancelled") actions.appendChild(bgButton("Retry", "retry", transfer));
      if (transfer.state === "done" && transfer.kind === "download") {
        const save = document.createElement("a");
        save.className = "button small";
        save.href = `${data.transfers}${transfer.id}/file/`;
        save.setAttribute("download", name);
        save.textContent = "Save";
        save.setAttribute("aria-label", `Save ${name}`);
        actions.appendChild(save);
      }
      const nodes = [title, figures, bar, stateLabel, actions];
      if (transfer.last_error && transfer.state !== "done") {
        const error = document.createElement("span");
        error.className = `transfer-error small${transfer.state === "failed" ? "" : " muted"}`;
        error.textContent = transfer.state === "cancelled" ? transfer.last_error : `${transfer.state === "failed" ? "" : "Last error: "}${transfer.last_error}`;
        nodes.push(error);
      }
      // A re-render (a later event: progress, the hash) keeps the focus where it was.
      const hadFocus = li.contains(document.activeElement);
      const focused = hadFocus ? document.activeElement.dataset.action : undefined;
      li.replaceChildren(...nodes);
      if (hadFocus) {
        const again = (focused && li.querySelector(`[data-action="${focused}"]`)) || li.querySelector("button, a");
        if (again) again.focus();
      }
    }

    function upsertTransfer(transfer) {
      let row = bg.rows.get(transfer.id);
      if (!row) {
        const li = document.createElement("li");
        li.dataset.id = String(transfer.id);
        row = { li, transfer: {}, speed: null, eta: null };
        bg.rows.set(transfer.id, row);
        // Newest first, whichever came first: the list's page or the live events.
        const list = $("bg-list");
        const older = [...list.children].find((item) => Number(item.dataset.id) < transfer.id);
        list.insertBefore(li, older || null);
      }
      row.transfer = { ...row.transfer, ...transfer };
      renderTransfer(row.transfer);
      summariseTransfers();
      return row;
    }

    function summariseTransfers() {
      const all = [...bg.rows.values()].map((row) => row.transfer);
      const active = all.filter((t) => BG_ACTIVE.has(t.state)).length;
      const failed = all.filter((t) => t.state === "failed").length;
      const count = $("bg-count");
      count.hidden = !active;
      count.textContent = String(active);
      $("bg-toggle").setAttribute("aria-label", active ? `Transfers, ${active} active` : "Transfers");
      const parts = [];
      if (active) parts.push(`${active} active`);
      const done = all.filter((t) => t.state === "done").length;
      if (done) parts.push(`${done} done`);
      if (failed) parts.push(`${failed} failed`);
      $("bg-summary").textContent = parts.join(" · ");
      $("bg-empty").hidden = all.length > 0;
    }

    async function loadTransfers() {
      try {
        const page = await window.Satchel.api(`${data.transfers}?page_size=100`, { quiet: true });
        // A row an event brought meanwhile is at least as fresh as this page of the list.
        page.results.filter((transfer) => !bg.rows.has(transfer.id)).forEach((transfer) => upsertTransfer(transfer));
        bg.loaded = true;
      } catch (error) {
        $("bg-summary").textContent = error.message;
      }
      summariseTransfers();
    }

    function showTransfers(open) {
      $("bg-transfers").hidden = !open;
      $("bg-toggle").setAttribute("aria-expanded", String(open));
      $("bg-toggle").classList.toggle("active", open);
    }

    async function startTransfer(body) {
      let transfer;
      try {
        transfer = await window.Satchel.api(data.transfers, { method: "POST", body });
      } catch (error) {
        return;
      }
      upsertTransfer(transfer); // the panel (opened) is the feedback; its summary is read out
      showTransfers(true);
    }

    function backgroundDownload() {
      const entry = selectedEntries()[0];
      if (!entry || entry.type !== "file") return;
      startTransfer({ kind: "download", site: state.site, path: join(state.path, entry.name) });
    }

    // The copy dialog: a site and a folder there, browsed by its subfolders.
    const copyPicker = { ticket: 0 };
    async function showCopyFolders() {
      const ticket = ++copyPicker.ticket;
      const site = $("copy-site").value;
      const folder = $("copy-folder").value.trim() || "/";
      const list = $("copy-folders");
      list.setAttribute("aria-busy", "true");
      let listing;
      try {
        listing = await window.Satchel.api(`${data.api}${site}/list/?path=${encodeURIComponent(folder)}`, { quiet: true });
      } catch (error) {
        if (ticket !== copyPicker.ticket) return;
        list.removeAttribute("aria-busy");
        const note = document.createElement("li");
        note.className = "muted small";
        note.textContent = error.message;
        list.replaceChildren(note);
        return;
      }
      if (ticket !== copyPicker.ticket) return;
      list.removeAttribute("aria-busy");
      const items = [];
      const go = (path, text, label) => {
        const li = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "link";
        button.append(svgIcon("dir"), document.createTextNode(text));
        button.setAttribute("aria-label", label);
        button.addEventListener("click", () => {
          $("copy-folder").value = path;
          showCopyFolders();
          $("copy-folder").focus();
        });
        li.appendChild(button);
        return li;
      };
      if (listing.path !== "/") items.push(go(parent(listing.path), "..", `Up to ${parent(listing.path)}`));
      listing.entries
        .filter((entry) => entry.type === "dir")
        .slice(0, 200)
        .forEach((entry) => items.push(go(join(listing.path, entry.name), entry.name, `Into ${entry.name}`)));
      if (!listing.entries.some((entry) => entry.type === "dir")) {
        const note = document.createElement("li");
        note.className = "muted small";
        note.textContent = `No folders in ${listing.path}: the file goes here.`;
        items.push(note);
      }
      list.replaceChildren(...items);
    }
    let copyTimer = null;
    $("copy-folder").addEventListener("input", () => {
      clearTimeout(copyTimer);
      copyTimer = setTimeout(showCopyFolders, 300);
    });
    $("copy-site").addEventListener("change", () => {
      const site = data.sites.find((item) => String(item.id) === $("copy-site").value);
      $("copy-folder").value = site ? site.initial_path || "/" : "/";
      showCopyFolders();
    });

    async function copyToSite() {
      const entry = selectedEntries()[0];
      if (!entry || entry.type !== "file") return;
      const select = $("copy-site");
      select.replaceChildren(
        ...data.sites.map((site) => {
          const option = document.createElement("option");
          option.value = String(site.id);
          option.textContent = site.id === state.site ? `${site.name} (this site)` : site.name;
          return option;
        })
      );
      const other = data.sites.find((site) => site.id !== state.site);
      select.value = String((other || data.sites[0]).id);
      $("copy-folder").value = other ? other.initial_path || "/" : state.path;
      const ok = await showDialog({ title: `Copy ${entry.name}`, text: "A worker copies it from server to server; you can close this page.", copy: true, ok: "Copy" });
      if (!ok) return;
      const folder = $("copy-folder").value.trim() || "/";
      startTransfer(
        { kind: "copy", site: state.site, path: join(state.path, entry.name), target_site: Number(select.value), target_path: folder.endsWith("/") ? folder : `${folder}/` }
      );
    }

    $("bg-list").addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button || button.getAttribute("aria-disabled") === "true") return;
      const li = button.closest("li");
      const id = Number(li.dataset.id);
      button.setAttribute("aria-disabled", "true"); // not `disabled`: that would drop the focus
      try {
        const transfer = await window.Satchel.api(`${data.transfers}${id}/${button.dataset.action}/`, { method: "POST" });
        upsertTransfer(transfer);
      } catch (error) {
        button.removeAttribute("aria-disabled");
        return;
      }
      // Pause becomes Resume, Retry becomes Pause…: the keyboard stays on the row.
      const next = li.querySelector("button, a");
      if (next && !li.contains(document.activeElement)) next.focus();
    });
    document.addEventListener("satchel:transfer.progress", async (event) => {
      const update = event.detail && event.detail.transfer;
      if (!update) return;
      const row = bg.rows.get(update.id);
      if (row) {
        row.speed = update.state === "running" ? update.speed : null;
        row.eta = update.state === "running" ? update.eta : null;
        const { speed, eta, ...fields } = update;
        upsertTransfer(fields);
        if (update.state === "done" && !row.announced && $("bg-transfers").hidden) {
          row.announced = true;
          toast(`${KIND_LABEL[update.kind] || "Transfer"} of ${row.transfer.name || basename(row.transfer.path)} finished.`);
        }
        return;
      }
      // Started elsewhere (another tab, the API): fetched whole, and again while events
      // keep coming in during the fetch (the one answered may predate them).
      if (bg.pending.has(update.id)) {
        bg.pending.set(update.id, true);
        return;
      }
      try {
        let transfer;
        do {
          bg.pending.set(update.id, false);
          transfer = await window.Satchel.api(`${data.transfers}${update.id}/`, { quiet: true });
        } while (bg.pending.get(update.id));
        upsertTransfer(transfer);
      } catch (error) {
        // Gone, or not ours to show.
      }
      bg.pending.delete(update.id);
    });
    $("bg-toggle").addEventListener("click", () => showTransfers($("bg-transfers").hidden));
    $("bg-close").addEventListener("click", () => {
      showTransfers(false);
      $("bg-toggle").focus();
    });
    $("bg-finished").addEventListener("change", (event) => {
      $("bg-list").classList.toggle("hide-finished", !event.target.checked);
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
      if (key === "Escape" && target.closest && target.closest("#bg-transfers")) {
        scroll.focus();
        return;
      }
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
        d: () => downloadSelected(),
        b: () => backgroundDownload(),
        c: () => copyToSite(),
        t: () => {
          showTransfers($("bg-transfers").hidden);
          if (!$("bg-transfers").hidden) ($("bg-list").querySelector("button, a") || $("bg-close")).focus();
        },
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
    $("act-download").addEventListener("click", downloadSelected);
    $("act-background").addEventListener("click", backgroundDownload);
    $("act-copy").addEventListener("click", copyToSite);

    navigate(data.path || "", { push: false }).then(() => scroll.focus({ preventScroll: true }));
    loadTransfers();
  }

  const form = $("site-form");
  if (form) siteForm(form);
  const app = $("files-app");
  if (app) browser(app);
})();
